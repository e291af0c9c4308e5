"""User-facing errors.

Every error a user can cause (bad list, missing file, malformed trial line, unknown key)
raises :class:`SSLSVError` with a message that names the file and line (or the key), so
the command line prints one clear line and exits with status 2 instead of a traceback
(:func:`sslsv_sb.recipe.cli.run_cli`).
"""


class SSLSVError(RuntimeError):
    """An error caused by user input (data, lists, configuration)."""


def where(path, line=None):
    """Format ``path[:line]`` for error messages."""
    return f"{path}:{line}" if line is not None else str(path)
