"""Side-by-side runs of the project and sslsv (the toolkit it re-implements).

- :mod:`~sslsv_sb.sslsv_compare.mapping` (pure): the comparison settings of each
  method, their translation into an sslsv ``config.yml`` and the settings table;
- :mod:`~sslsv_sb.sslsv_compare.dataview`: the data folder as sslsv expects it
  (MUSAN / RIR layout, list files), made of symbolic links in the work folder;
- :mod:`~sslsv_sb.sslsv_compare.runner`: runs **inside sslsv's virtual environment**
  (standard library, torch and sslsv only) and saves sslsv's embeddings;
- :mod:`~sslsv_sb.sslsv_compare.compare`: orchestration, scoring with the project's
  metrics and the report (``tools/compare_sslsv.py`` is its command line).

See ``docs/sslsv_comparison.md``.
"""
