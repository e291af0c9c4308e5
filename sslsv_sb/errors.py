"""User-facing errors.

Every error a user can cause (bad list, missing file, malformed trial line, unknown key)
raises :class:`SSLSVError` with a message that names the file and line (or the key), so
the command line prints one clear line and exits non-zero instead of a traceback.
"""


class SSLSVError(RuntimeError):
    """An error caused by user input (data, lists, configuration)."""


def where(path, line=None):
    """Format ``path[:line]`` for error messages."""
    return f"{path}:{line}" if line is not None else str(path)


def run_cli(main, argv=None):
    """Run a command-line ``main(argv)``: a user error prints one line, exit code 2.

    Arguments
    ---------
    main : callable
        ``main(argv)`` of a recipe or tool.
    argv : list of str or None
        Arguments (default: ``sys.argv[1:]``).
    """
    import sys

    try:
        return main(sys.argv[1:] if argv is None else argv)
    except SSLSVError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
