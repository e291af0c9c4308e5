"""The commands behind the scripts of ``tools/`` (each script calls one ``main``)."""
