"""Command-line plumbing shared by every recipe script and tool.

- :func:`run_cli` runs a ``main(argv)``: a user error
  (:class:`~sslsv_sb.errors.SSLSVError`) prints one ``error: ...`` line on stderr and
  exits with status 2; Ctrl-C exits with status 130;
- :func:`split_flags` separates a script's own ``--flag=value`` options from the
  yaml overrides it passes on to :func:`sslsv_sb.recipe.hparams.load_hparams`;
- :func:`pop_keys` removes given ``--key=value`` overrides from an argument list;
- logging: :class:`ConsoleHandler` prints INFO records on stdout and warnings,
  errors and tracebacks on stderr (:func:`log_overrides` plugs it into
  SpeechBrain's ``setup_logging``, whose console handler writes everything to
  stdout), and :func:`quiet_irrelevant_warnings` drops SpeechBrain's
  ``torchvision is not available - cannot save figures``, printed whenever a yaml
  builds a ``FileTrainLogger`` although only its ``ProgressSampleLogger`` saves
  figures, which no recipe uses. Importing this module applies the latter.

Example
-------
>>> opts, rest = split_flags(
...     ["run.yaml", "--checkpoint=best", "--lr=0.1", "--no_plots"],
...     {"checkpoint": "auto", "no_plots": False},
... )
>>> opts, rest
({'checkpoint': 'best', 'no_plots': True}, ['run.yaml', '--lr=0.1'])
>>> pop_keys(["run.yaml", "--n_classes", "3", "--lr=1"], ["n_classes"])
({'n_classes': '3'}, ['run.yaml', '--lr=1'])
"""

import logging
import sys

import tqdm
import yaml

from sslsv_sb.errors import SSLSVError
from sslsv_sb.runtime import configure_process

USER_ERROR_EXIT = 2
INTERRUPT_EXIT = 130

# SpeechBrain warnings that never apply to this project's runs: {logger: messages}.
IRRELEVANT_WARNINGS = {
    "speechbrain.utils.train_logger": (
        # Emitted when speechbrain.utils.train_logger is imported (class body of
        # ProgressSampleLogger) without torchvision; only that logger's "image"
        # format needs torchvision, and no recipe here builds one.
        "torchvision is not available - cannot save figures",
    ),
}


class _DropMessages(logging.Filter):
    """Drop the records of one logger whose message is one of ``messages``."""

    def __init__(self, messages):
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record):
        return record.getMessage() not in self.messages


def quiet_irrelevant_warnings():
    """Filter :data:`IRRELEVANT_WARNINGS` out of their loggers (idempotent).

    Only the exact messages are dropped; every other record of those loggers goes
    through. The filter sits on the named logger, which SpeechBrain's logging
    set-up (``disable_existing_loggers: False``) leaves in place.

    Example
    -------
    >>> quiet_irrelevant_warnings()
    >>> log = logging.getLogger("speechbrain.utils.train_logger")
    >>> rec = log.makeRecord(log.name, logging.WARNING, "f", 1,
    ...     "torchvision is not available - cannot save figures", None, None)
    >>> log.filter(rec), log.filter(log.makeRecord(
    ...     log.name, logging.WARNING, "f", 1, "another warning", None, None))
    (False, True)
    """
    for name, messages in IRRELEVANT_WARNINGS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(messages))


quiet_irrelevant_warnings()


class ConsoleHandler(logging.StreamHandler):
    """Console log handler: below WARNING to ``stream`` (stdout), the rest to stderr.

    Writes through ``tqdm.write`` as SpeechBrain's ``TqdmCompatibleStreamHandler``
    (progress bars stay intact). ``sys.stderr`` is looked up at each record, so a
    redirected stderr is honoured.

    Arguments
    ---------
    stream : file or None
        Stream of the INFO / DEBUG records (default ``sys.stdout``).
    """

    def __init__(self, stream=None):
        super().__init__(stream if stream is not None else sys.stdout)

    def emit(self, record):
        """Format ``record`` and write it to stdout or stderr by its level."""
        try:
            msg = self.format(record)
            out = self.stream if record.levelno < logging.WARNING else sys.stderr
            tqdm.tqdm.write(msg, end=self.terminator, file=out)
            out.flush()
        except RecursionError:
            raise
        except Exception:  # logging's convention: report, never raise
            self.handleError(record)


def log_overrides(log_file):
    """Overrides of SpeechBrain's ``log-config.yaml`` for a run.

    The console handler becomes :class:`ConsoleHandler` (warnings and errors on
    stderr) and the file handler writes ``log_file``. Use as
    ``speechbrain.utils.logger.setup_logging(DEFAULT_LOG_CONFIG,
    log_overrides(path))``.

    Example
    -------
    >>> log_overrides("out/log.txt")["handlers"]["console"]["class"]
    'sslsv_sb.recipe.cli.ConsoleHandler'
    """
    return {
        "handlers": {
            "console": {"class": f"{__name__}.ConsoleHandler"},
            "file_handler": {"filename": log_file},
        }
    }


def run_cli(main, argv=None):
    """Run a command-line ``main(argv)`` and turn user errors into exit status 2.

    Arguments
    ---------
    main : callable
        ``main(argv)`` of a recipe or tool. An ``int`` return value is the exit
        status (tools that report their own failures); any other value is ignored.
    argv : list of str or None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    object
        What ``main`` returned, when it is not an exit status.

    Raises
    ------
    SystemExit
        Status 2 after an :class:`SSLSVError` (``error: <message>`` on stderr, no
        traceback), 130 after Ctrl-C, or the ``int`` that ``main`` returned.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_process(argv)  # allocator, bf16 check (sslsv_sb.runtime)
    try:
        result = main(argv)
    except SSLSVError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        raise SystemExit(INTERRUPT_EXIT) from None
    if isinstance(result, int) and not isinstance(result, bool):
        raise SystemExit(result)
    return result


def split_flags(argv, flags):
    """Separate a script's own flags from the arguments passed on to the yaml.

    ``--name=value`` and ``--name value`` set a flag; a flag whose default is
    ``False`` is a switch (``--name`` alone sets it to ``True``). Values are parsed as
    YAML scalars or flow lists (``--probes=[linear,mlp]``, ``--n_crops=3``).

    Arguments
    ---------
    argv : list of str
        Command-line arguments.
    flags : dict
        ``{flag name: default value}``.

    Returns
    -------
    (dict, list of str)
        ``{flag name: value}`` (defaults for the flags not given) and the remaining
        arguments, in their order.

    Raises
    ------
    SSLSVError
        A flag without its value, or a value that is not valid YAML.
    """
    opts, rest = dict(flags), []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name not in flags:
            rest.append(arg)
            i += 1
            continue
        if flags[name] is False and "=" not in arg:  # boolean switch
            opts[name] = True
        elif "=" in arg:
            opts[name] = arg.split("=", 1)[1]
        else:
            if i + 1 >= len(argv):
                raise SSLSVError(f"--{name}: missing value")
            i += 1
            opts[name] = argv[i]
        if isinstance(opts[name], str):
            try:
                opts[name] = yaml.safe_load(opts[name])
            except yaml.YAMLError as err:
                raise SSLSVError(f"--{name}: cannot parse {opts[name]!r}") from err
        i += 1
    return opts, rest


def pop_keys(args, keys):
    """Remove the ``--key=X`` / ``--key X`` overrides of ``keys`` from ``args``.

    Arguments
    ---------
    args : list of str
        Command-line arguments (yaml path and overrides).
    keys : iterable of str
        Override names to take out.

    Returns
    -------
    (dict, list of str)
        ``{key: value as typed}`` of the removed overrides and the remaining
        arguments, in their order.
    """
    keys, kept, found, i = set(keys), [], {}, 0
    while i < len(args):
        arg = args[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name in keys and "=" not in arg and i + 1 < len(args):
            found[name] = args[i + 1]
            i += 2
            continue
        if name in keys and "=" in arg:
            found[name] = arg.split("=", 1)[1]
        else:
            kept.append(arg)
        i += 1
    return found, kept
