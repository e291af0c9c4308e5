"""A run folder's lifecycle: lock, write-once ``hyperparams.yaml``, resume, stop.

A training run owns its output folder (``train.py``); ``evaluate.py``,
``downstream.py``, ``pseudo_labels.py`` (:class:`EvaluationFolders`) and the export
tool read it. What keeps the folder whole:

- **a lock** (:class:`FolderLock`): ``<folder>/.run.lock``, an ``flock`` on a file
  held open for the process lifetime. The kernel drops the lock when the process
  dies, even by ``kill -9``, so a lock left behind by a dead run is detected without
  guessing from pids; the file holds the holder's pid, host, start time and command
  (JSON, one line) for the message a second process prints. A lock file whose lock
  nobody holds is stale and taken over with a log line. Where the filesystem has no
  ``flock`` (some network mounts), the lock falls back to an ``O_CREAT | O_EXCL``
  file whose pid is checked on the same host. ``train.py`` takes it exclusively (rank 0
  under DDP; the other ranks share it); readers (``evaluate.py --eval_folder``,
  ``pseudo_labels.py``, the export tool) take it shared, so they wait for no one but
  never read a folder that a training writes;
- **a write-once record** (:meth:`TrainingRunFolder.start`): the run's resolved
  ``hyperparams.yaml`` is written when the run starts, after every check passed.
  A later command on the same folder is a resume: it is compared with the record;
  a change of a key that shapes the model or the data stream (anything not in
  :data:`RESUME_MUTABLE`) stops with one line naming the keys and both values, and the
  record is never rewritten;
- **a clean stop** (:class:`GracefulStop`): SIGTERM / SIGINT during training stop the
  run at the next optimiser-step boundary (every DDP rank at the same step), after an
  intra-epoch checkpoint, and exit with 143 / 130 and ``stopped by SIGTERM: re-run the
  same command to resume``.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with FolderLock(folder, role="train.py") as lock:
...     sorted(read_lock_info(folder))
['command', 'host', 'pid', 'pids', 'role', 'since']
>>> os.path.exists(os.path.join(folder, LOCK_NAME))  # removed on release
False
"""

import contextlib
import datetime
import errno
import fcntl
import io
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading

import torch
from ruamel.yaml import YAML
from speechbrain.utils.distributed import (
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
    is_distributed_initialized,
)

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.hparams import key_references, resolved_text

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
RUN_HPARAMS = "hyperparams.yaml"
ENV_LOG = "env.log"
LOG_FILE = "log.txt"
ABSENT = "<absent>"  # a key on one side only, in resume comparisons

# Keys a resume may change: the number of epochs (a run may be extended), where the
# folder and the data are (same files, other paths), loader workers (the crops are
# drawn per (seed, epoch, index), whatever the worker count), what is logged, how
# the model is selected and evaluated after training. Every other key shapes the
# model, the optimisation or the data stream and must match the record. Keys
# starting with one of RESUME_MUTABLE_PREFIXES (``eval_*``: evaluation settings) may
# change as well. Run options that are not yaml keys (--precision, --device,
# --ckpt_interval_*, DDP) are not recorded and may change.
RESUME_MUTABLE = (
    "number_of_epochs",
    "output_folder",
    "data_folder",
    "num_workers",
    "embedded",
    "trial_lists",
    "valid_trial_list",
    "valid_every_n_epochs",
    "valid_crop_seconds",
    "valid_n_crops",
    "patience",
    "average_last_k",
    "keep_checkpoints",
    "tensorboard",
    "wandb",
    "wandb_mode",
    "log_every_steps",
)
RESUME_MUTABLE_PREFIXES = ("eval_",)

# errno values of a filesystem without flock support (fallback to O_EXCL files).
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


# ------------------------------------------------------------------------- the lock
def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def default_command():
    """The command line of this process, as a shell would take it back."""
    return shlex.join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])


def read_lock_info(folder, name=LOCK_NAME):
    """The holder recorded in ``<folder>/.run.lock``, or ``None``.

    Arguments
    ---------
    folder : str
    name : str
        The lock file's name (:data:`LOCK_NAME` unless the lock is not the run's).

    Returns
    -------
    dict or None
        ``{"pid", "host", "since", "command", "role", "pids"}`` as written by the
        holder; ``{}`` for a lock file without (readable) details; ``None`` without
        a file.
    """
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def holder_text(info):
    """``pid 123 on host (since ..., command: ...)`` for messages.

    >>> holder_text({"pid": 7, "host": "h", "since": "2026-01-01T00:00:00+00:00",
    ...              "command": "train.py x.yaml"})
    'pid 7 on h since 2026-01-01T00:00:00+00:00 (train.py x.yaml)'
    >>> holder_text({"pid": 7, "pids": [7, 8], "host": "h"})
    'pids 7, 8 (DDP ranks) on h'
    >>> holder_text({})
    'another process (no details recorded yet)'
    """
    if not info or "pid" not in info:
        return "another process (no details recorded yet)"
    text = f"pid {info['pid']} on {info.get('host', '?')}"
    pids = info.get("pids") or []
    if len(pids) > 1:
        text = f"pids {', '.join(str(p) for p in pids)} (DDP ranks) on "
        text += str(info.get("host", "?"))
    if info.get("since"):
        text += f" since {info['since']}"
    if info.get("command"):
        text += f" ({info['command']})"
    return text


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists, another user's; or unreadable: assume alive
    return True


class FolderLock:
    """Exclusive (or shared) lock of a folder through ``<folder>/.run.lock``.

    ``flock`` on the open file: the lock lives exactly as long as the process, so a
    crash or ``kill -9`` never leaves a lock that blocks the next run. The exclusive
    holder writes its pid, host, start time, role and command into the file and
    removes it on release. Shared holders (readers) write nothing; a reader that had
    to create the file removes it again when no one else holds it.

    Arguments
    ---------
    folder : str
        Existing folder.
    shared : bool
        Reader lock: any number of readers, no writer.
    role : str
        What the holder does (``"train.py"``, ``"evaluate.py"``), recorded with it.
    hint : str
        Appended to the "in use" message (what the user can do; ``{pid}`` and
        ``{pids}`` are replaced by the holder's pid and the pids of all its ranks).
    command : str or None
        Recorded command (default: this process's command line).
    name : str
        The lock file's name: :data:`LOCK_NAME`, or another one for a script that
        runs ``train.py`` in the folder it locks (``language.py``), so that its
        lock and the training's do not exclude each other.
    """

    def __init__(
        self,
        folder,
        shared=False,
        role="train.py",
        hint="",
        command=None,
        name=LOCK_NAME,
    ):
        self.folder = os.path.abspath(str(folder))
        self.name = name
        self.path = os.path.join(self.folder, name)
        self.shared, self.role, self.hint = shared, role, hint
        self.command = command or default_command()
        self.fd = None
        self.flock = True
        self.info = None
        self.created_file = False

    # -------------------------------------------------------------- acquire
    def _busy(self, info):
        if info and "pid" in info:
            msg = f"{self.folder} is in use by {holder_text(info)}"
        elif self.shared:
            msg = f"{self.folder} is in use by a run that is starting"
        else:
            msg = (
                f"{self.folder} is in use by another process (a reader such as "
                "evaluate.py --eval_folder, pseudo_labels.py or export_model.py, or "
                "a run starting)"
            )
        info = info or {}
        pids = info.get("pids") or [info.get("pid", "PID")]
        hint = self.hint.format(
            pid=info.get("pid", "PID"), pids=" ".join(str(p) for p in pids)
        )
        return SSLSVError(msg + (f"; {hint}" if hint else ""))

    def _write_info(self, extra=None):
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _now(),
            "command": self.command,
            "role": self.role,
            "pids": [os.getpid()],
        }
        info.update(extra or {})
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)
        self.info = info

    def record_pids(self, pids):
        """Record the pids of every DDP rank (rank 0's first) in the lock file
        (``"host:pid"`` for a rank on another node)."""
        if self.fd is not None and not self.shared:
            self._write_info({"pids": list(pids), "since": self.info["since"]})

    def acquire(self):
        """Take the lock or raise :class:`SSLSVError` naming the holder.

        Returns
        -------
        FolderLock
            ``self``.
        """
        for _ in range(20):
            try:
                if self._try_flock():
                    return self
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    raise SSLSVError(
                        f"{self.folder}: cannot write the lock file {self.name} "
                        f"({err.strerror})"
                    ) from None
                self.flock = False
                return self._acquire_excl()
        raise SSLSVError(f"{self.path}: the lock file keeps changing; try again")

    def _try_flock(self):
        """One attempt; False when the file was replaced meanwhile (retry)."""
        flags = os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT
        self.created_file = False
        try:
            fd = os.open(self.path, flags | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if not self.shared:
                raise
            if not os.access(self.folder, os.W_OK):
                self.fd = None  # a folder nobody may write: nothing to lock
                return True
            try:  # a reader's lock file, removed again on release
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
                )
                self.created_file = True
            except FileExistsError:
                return False
        try:
            mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._busy(read_lock_info(self.folder, self.name) or {}) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between open and flock: retry
                os.close(fd)
                return False
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        self.fd = fd
        if not self.shared:
            old = read_lock_info(self.folder, self.name)
            if old:
                self._log_takeover(old)
            self._write_info()
        return True

    def _log_takeover(self, old):
        where = ""
        if old.get("host") not in (None, socket.gethostname()):
            where = (
                " (another host: the lock is reliable across hosts only where the "
                "filesystem supports flock, e.g. NFSv4)"
            )
        logger.warning(
            "%s: taking over the stale lock of %s: that process is gone%s",
            self.folder,
            holder_text(old),
            where,
        )

    def _acquire_excl(self):
        """Fallback without flock: create the file exclusively, check its pid."""
        if self.shared:
            info = read_lock_info(self.folder, self.name)
            if info and not self._stale(info):
                raise self._busy(info)
            self.fd = None
            return self
        for _ in range(20):
            try:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
                )
            except FileExistsError:
                info = read_lock_info(self.folder, self.name)
                if info is None:
                    continue
                if not self._stale(info):
                    raise self._busy(info) from None
                self._log_takeover(info)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            self.fd = fd
            self._write_info()
            return self
        raise SSLSVError(f"{self.path}: the lock file keeps changing; try again")

    @staticmethod
    def _stale(info):
        """Without flock: the holder is gone when it ran here and its pid is dead."""
        return (
            "pid" in info
            and info.get("host") == socket.gethostname()
            and not _pid_alive(info["pid"])
        )

    # -------------------------------------------------------------- release
    def release(self):
        """Drop the lock; remove the lock file if this holder wrote or created it.

        A reader removes the file it created only when no one else holds it (it
        gets the exclusive lock first), so a reader leaves the folder as it was.
        """
        if self.fd is None:
            return
        try:
            mine = not self.shared
            if self.shared and self.created_file and self.flock:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    mine = True
                except OSError:
                    mine = False  # other readers (or a writer) hold it now
            if mine:
                with contextlib.suppress(OSError):
                    if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                        os.unlink(self.path)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- folders, yaml peek
def missing_dirs(path):
    """The folders :func:`os.makedirs` would create for ``path``, deepest last."""
    missing = []
    path = os.path.abspath(str(path))
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing[::-1]


def make_folder(folder, flag):
    """Create ``folder`` (and parents) or raise one line naming ``flag``.

    Arguments
    ---------
    folder : str
    flag : str
        Command-line flag that named it (``--output_folder``).

    Returns
    -------
    list of str
        The folders created (outermost first).
    """
    folder = os.path.abspath(str(folder))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise SSLSVError(f"{flag}={folder}: exists and is not a folder")
    created = missing_dirs(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise SSLSVError(
            f"{flag}={folder}: cannot create the folder ({err.strerror})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SSLSVError(f"{flag}={folder}: the folder is not writable")
    return created


def remove_empty(folders):
    """Remove the given folders, innermost first, where they are empty."""
    for path in sorted(set(folders), key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _plain(node):
    """A ruamel node as comparable plain data: tags kept, comments dropped."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, dict):
        value = {str(k): _plain(v) for k, v in node.items()}
    elif isinstance(node, (list, tuple)):
        value = [_plain(v) for v in node]
    elif hasattr(node, "value") and tag:  # TaggedScalar
        value = node.value
    elif isinstance(node, bool) or node is None:
        value = node
    elif isinstance(node, int):
        value = int(node)
    elif isinstance(node, float):
        value = float(node)
    else:
        value = str(node)
    return {"!tag": tag, "value": value} if tag and tag.startswith("!") else value


def parse_resolved(text):
    """Top-level keys of a resolved yaml text as plain data (see :func:`_plain`).

    >>> parse_resolved("a: 1\\nb: !new:x.Y {c: [1, 2]}\\n")
    {'a': 1, 'b': {'!tag': '!new:x.Y', 'value': {'c': [1, 2]}}}
    """
    doc = YAML(typ="rt").load(io.StringIO(text)) or {}
    return {str(k): _plain(v) for k, v in doc.items()}


def peek(hparams_file, overrides, keys):
    """Values of plain ``keys`` of the yaml with ``overrides``, nothing built.

    Arguments
    ---------
    hparams_file : str
    overrides : str or dict
    keys : list of str

    Returns
    -------
    dict or None
        ``{key: value}`` (``None`` for a missing key); ``None`` when the yaml or the
        overrides do not resolve (loading the yaml then reports the error).
    """
    try:
        doc = parse_resolved(resolved_text(hparams_file, overrides))
    except Exception:  # noqa: BLE001 -- load_yaml reports the error properly
        return None
    return {k: doc.get(k) for k in keys}


# --------------------------------------------------------------------- resume check
def _mutable(key):
    return key in RESUME_MUTABLE or key.startswith(RESUME_MUTABLE_PREFIXES)


def _show(value, limit=70):
    if value == ABSENT:
        return value
    text = json.dumps(value, default=str, separators=(", ", ": "))
    if isinstance(value, dict) and "!tag" in value:
        text = f"{value['!tag']} {json.dumps(value['value'], default=str)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _closure(refs):
    """Transitive ``!ref`` closure: {key: every key it depends on}."""
    out = {}

    def walk(key, seen):
        for ref in refs.get(key, ()):
            if ref not in seen:
                seen.add(ref)
                walk(ref, seen)
        return seen

    for key in refs:
        out[key] = walk(key, set())
    return out


def compare_with_record(recorded, current, pinned, refs):
    """Keys that differ between a run's record and the current command.

    Arguments
    ---------
    recorded : dict
        :func:`parse_resolved` of the run's ``hyperparams.yaml``.
    current : dict
        The current command's resolved yaml (to report its values).
    pinned : dict
        The current command resolved with the record's values of the mutable keys
        (so keys derived from them, e.g. ``save_folder`` from ``output_folder``,
        compare equal).
    refs : dict
        ``{key: keys it refers to}`` of the merged yaml (:func:`key_references`).

    Returns
    -------
    (list of (key, old, new), list of (key, old, new))
        Refused changes (reported without the keys derived from another refused
        key) and allowed changes: of :data:`RESUME_MUTABLE` keys, and keys on one
        side only (a newer or older yaml added or dropped them; ``"<absent>"``).

    Example
    -------
    >>> rec = {"seed": 1, "enc": {"c": 1}, "number_of_epochs": 2}
    >>> cur = {"seed": 2, "enc": {"c": 2}, "number_of_epochs": 3}
    >>> pin = {"seed": 2, "enc": {"c": 2}, "number_of_epochs": 2}
    >>> compare_with_record(rec, cur, pin, {"enc": {"seed"}})
    ([('seed', 1, 2)], [('number_of_epochs', 2, 3)])
    """
    missing = object()
    both = [k for k in recorded if k in pinned]
    refused = [k for k in both if not _mutable(k) and recorded[k] != pinned[k]]
    deps = _closure(refs)
    shown = [k for k in refused if not (deps.get(k, set()) & set(refused))] or refused
    allowed = [
        k
        for k in dict.fromkeys([*recorded, *current])
        if (_mutable(k) or k not in recorded or k not in current)
        and recorded.get(k, missing) != current.get(k, missing)
    ]

    def triple(k):
        return (k, recorded.get(k, ABSENT), current.get(k, ABSENT))

    return [triple(k) for k in shown], [triple(k) for k in allowed]


def _pinned_overrides(overrides, recorded):
    """``overrides`` plus the record's values of the mutable keys (a dict)."""
    yaml = YAML(typ="rt")
    merged = {}
    if isinstance(overrides, str) and overrides.strip():
        merged.update(yaml.load(overrides) or {})
    elif isinstance(overrides, dict):
        merged.update(overrides)
    for key, value in recorded.items():
        if _mutable(key) and not (isinstance(value, dict) and "!tag" in value):
            merged[key] = value
    return merged


def record_differences(record_path, hparams_file, overrides):
    """How the current command differs from a run's record (see :func:`check_resume`).

    Returns
    -------
    (list of (key, old, new), list of (key, old, new))
        Refused and allowed changes (:func:`compare_with_record`).
    """
    try:
        with open(record_path, encoding="utf-8") as f:
            recorded = parse_resolved(f.read())
    except (OSError, ValueError) as err:
        raise SSLSVError(f"{record_path}: cannot read it ({err})") from None
    except Exception as err:  # noqa: BLE001 -- ruamel raises several error types
        msg = " ".join(str(err).split())[:200]
        raise SSLSVError(f"{record_path}: not a valid yaml ({msg})") from None
    current = parse_resolved(resolved_text(hparams_file, overrides))
    pinned = parse_resolved(
        resolved_text(hparams_file, _pinned_overrides(overrides, recorded))
    )
    return compare_with_record(recorded, current, pinned, key_references(hparams_file))


def describe_changes(changes):
    """``key: old -> new; ...`` of :func:`compare_with_record` triples.

    >>> describe_changes([("seed", 1, 2), ("channels", [8], [16])])
    'seed: 1 -> 2; channels: [8] -> [16]'
    """
    return "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, o, n in changes)


def check_resume(record_path, hparams_file, overrides):
    """Refuse a command that changes what the recorded run trains.

    Arguments
    ---------
    record_path : str
        The run's ``hyperparams.yaml``.
    hparams_file : str
        The yaml of the current command (merged over its ``extends``).
    overrides : str or dict
        The current overrides.

    Returns
    -------
    list of (key, old, new)
        Allowed changes (:data:`RESUME_MUTABLE`), for the log.

    Raises
    ------
    SSLSVError
        One line naming each refused key with the recorded and the current value.
    """
    refused, allowed = record_differences(record_path, hparams_file, overrides)
    if refused:
        changes = describe_changes(refused)
        folder = os.path.dirname(record_path)
        raise SSLSVError(
            f"{record_path}: this command changes the recorded run ({changes}); a "
            "resume may change only number_of_epochs, paths, num_workers, logging, "
            "validation and evaluation keys. Use another --output_folder, or remove "
            f"{folder} to start over"
        )
    return allowed


def has_checkpoints(save_folder):
    """Whether ``save_folder`` holds SpeechBrain checkpoints (``CKPT+*``)."""
    try:
        return any(n.startswith("CKPT+") for n in os.listdir(save_folder))
    except OSError:
        return False


def write_once(path, text):
    """Write ``text`` to ``path`` atomically; never replace an existing file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the file appeared meanwhile
    except OSError as err:
        raise SSLSVError(f"{path}: cannot write it ({err.strerror})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def is_run_folder(folder):
    """Whether ``folder`` is (or is becoming) a training run folder.

    True when it holds a training ``hyperparams.yaml`` (with ``brain_class``),
    ``save/CKPT+*`` checkpoints or a ``.run.lock``.
    """
    folder = str(folder)
    if os.path.exists(os.path.join(folder, LOCK_NAME)):
        return True
    if has_checkpoints(os.path.join(folder, "save")):
        return True
    try:
        with open(os.path.join(folder, RUN_HPARAMS), encoding="utf-8") as f:
            return any(line.startswith("brain_class:") for line in f)
    except OSError:
        return False


# --------------------------------------------------------------------- DDP helpers
def _on_main(fn):
    """Run ``fn`` on rank 0; every rank gets its result or its :class:`SSLSVError`.

    (A collective: call it on every rank. The result must be picklable.)
    """
    error, result = None, None
    if if_main_process():
        try:
            result = fn()
        except SSLSVError as err:
            error = str(err)
    if is_distributed_initialized():
        error, result = ddp_broadcast((error, result))
    if error is not None:
        raise SSLSVError(error)
    return result


def _all_pids():
    """Pids of every rank (a collective): ints on this host, ``"host:pid"`` else."""
    if not is_distributed_initialized():
        return [os.getpid()]
    ranks = [None] * torch.distributed.get_world_size()
    host = socket.gethostname()
    torch.distributed.all_gather_object(ranks, (host, os.getpid()))
    return [pid if h == host else f"{h}:{pid}" for h, pid in ranks]


# ------------------------------------------------------------------ training folder
class TrainingRunFolder:
    """A ``train.py`` run folder: claim (lock) before loading, start after checks.

    :meth:`claim` is the ``before_load`` hook of
    :func:`~sslsv_sb.recipe.hparams.load_hparams`: it finds ``output_folder`` in the
    resolved yaml (no object built), creates the folder (an unwritable one is one
    error line) and takes the lock on rank 0, before the yaml's objects are built.
    :meth:`start` runs once every input was validated: it checks a resume against
    the record or writes the record, then sets up the log files. :meth:`close`
    releases the lock; if the run never started, the folders it created (and that
    are still empty) are removed.

    Arguments
    ---------
    command : str or None
        Recorded in the lock and the record (default: this process's command line).
    """

    def __init__(self, command=None):
        self.command = command or default_command()
        self.folder = None
        self.lock = None
        self.created = []
        self.started = False
        self._checked = None  # (allowed changes, resumed) once check() ran

    def claim(self, hparams_file, overrides, folder=None):
        """Create and lock the output folder (rank 0; errors on every rank).

        Arguments
        ---------
        hparams_file : str
        overrides : str
            Command-line overrides (yaml text).
        folder : str or None
            The output folder when already known (else read from the yaml).
        """
        if self.folder is not None:
            return
        if folder is None:
            found = peek(hparams_file, overrides, ["output_folder", "save_folder"])
            if not found or not found["output_folder"]:
                return  # load_yaml reports the yaml error; start() claims later
            folder, save = found["output_folder"], found["save_folder"]
        else:
            save = None
        folder = os.path.abspath(str(folder))

        def take():
            self.created = make_folder(folder, "--output_folder")
            if save:
                self.created += missing_dirs(save)  # made when the yaml is loaded
            self.lock = FolderLock(
                folder,
                role="train.py",
                hint="wait for it to end (or stop it: kill {pids}), or use another "
                "--output_folder",
                command=self.command,
            ).acquire()

        _on_main(take)
        self.folder = folder
        pids = _all_pids()
        if self.lock is not None:
            self.lock.record_pids(pids)

    def check(self, hparams_file, overrides, hparams):
        """Check a resume against the record, early (before the inputs are read).

        Arguments are those of :meth:`start`, which repeats nothing this did.

        Returns
        -------
        list of (key, old, new)
            Allowed changes of a resume (empty for a new run).
        """
        out = os.path.abspath(str(hparams["output_folder"]))
        if self.folder is None:
            self.claim(hparams_file, overrides, folder=out)
        elif out != self.folder:
            raise SSLSVError(
                f"output_folder resolved to {out} after loading, {self.folder} before"
            )
        record = os.path.join(out, RUN_HPARAMS)
        save = str(hparams.get("save_folder") or os.path.join(out, "save"))

        def check_record():
            if os.path.isfile(record):
                return check_resume(record, hparams_file, overrides), True
            if has_checkpoints(save):
                raise SSLSVError(
                    f"{save} holds checkpoints but {record} is missing: cannot check "
                    "that this command continues that run. Restore the file, or use "
                    "another --output_folder"
                )
            return [], False

        self._checked = _on_main(check_record)
        return self._checked[0]

    def start(self, hparams_file, overrides, hparams):
        """Check a resume against the record or write it; set up the logs.

        Arguments
        ---------
        hparams_file : str
            The merged yaml of this command (``load_hparams``'s first value).
        overrides : str
            Its overrides (``load_hparams``'s third value).
        hparams : dict
            The loaded hyper-parameters (``output_folder``, ``save_folder``).

        Returns
        -------
        list of (key, old, new)
            The allowed changes of a resume (empty for a new run).
        """
        if self._checked is None:
            self.check(hparams_file, overrides, hparams)
        allowed, resumed = self._checked
        out = self.folder
        record = os.path.join(out, RUN_HPARAMS)
        if not resumed:
            _on_main(
                lambda: write_once(record, self._record_text(hparams_file, overrides))
            )
        self.started = True
        if if_main_process():
            setup_run_logging(out)
            write_env_log(out, resumed, self.command)
            if resumed:
                logger.info("resuming the run in %s (%s)", out, RUN_HPARAMS)
            for key, old, new in allowed:
                if ABSENT in (old, new):
                    logger.warning(
                        "resume: %s is %s in the run's record and %s now (the yaml "
                        "gained or lost the key since the run started)",
                        key,
                        _show(old),
                        _show(new),
                    )
                else:
                    logger.info(
                        "resume: %s changed from %s to %s (allowed)",
                        key,
                        _show(old),
                        _show(new),
                    )
        ddp_barrier()
        return allowed

    def _record_text(self, hparams_file, overrides):
        head = [
            f"# The run's hyper-parameters, written once when it started ({_now()}).",
            f"# command: {self.command}",
            "# A resume (the same command again) is checked against this file, which",
            "# is never rewritten (sslsv_sb.recipe.runfolder).",
            "# yamllint disable",
        ]
        return "\n".join(head) + "\n" + resolved_text(hparams_file, overrides)

    def close(self):
        """Release the lock; remove the folders made for a run that never started."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if not self.started:
            remove_empty(self.created)
            self.created = []


class EvaluationFolders:
    """The folders of a script that reads a trained run and writes results.

    ``evaluate.py``, ``downstream.py`` and ``pseudo_labels.py``: the run it reads
    and the folder it writes. :meth:`claim` (the ``before_load`` hook of
    ``load_hparams``) runs before the yaml builds anything (its ``Checkpointer``
    would create ``<run>/save``):

    - the run folder must exist and hold its ``save`` folder (nothing is created);
    - results in the run folder (no ``--eval_folder``): the run is locked
      exclusively, so a training or another script writing there is refused;
    - results in another folder (``--eval_folder``, or ``<run>/<subfolder>``): the
      run is locked shared (read; refused while a training holds it) and the results
      folder, created if needed (an unwritable one is one error line), exclusively.

    Arguments
    ---------
    eval_folder : str or None
        The results folder given on the command line (``--eval_folder``).
    role : str
        The script, recorded with the locks and named in the messages.
    purpose : str
        What it does with the run (``"scores a trained run"``), for the message
        about a missing run folder.
    flag : str or None
        The flag of ``eval_folder`` (``None``: the script writes into the run).
    subfolder : str or None
        Results in ``<run>/<subfolder>`` when ``eval_folder`` is not given (else in
        the run folder).
    """

    def __init__(
        self,
        eval_folder=None,
        role="evaluate.py",
        purpose="scores a trained run",
        flag="--eval_folder",
        subfolder=None,
    ):
        self.eval_folder = eval_folder
        self.role, self.purpose, self.flag = role, purpose, flag
        self.subfolder = subfolder
        self.run = self.out = None
        self.locks = []
        self.created = []

    def claim(self, hparams_file, overrides, run=None, save=None):
        """Check the run folder, lock the folders (see the class).

        Arguments
        ---------
        hparams_file, overrides
            As given to ``before_load`` (used to find ``output_folder`` and
            ``save_folder`` when ``run`` is not given).
        run, save : str or None
            The run and checkpoint folders when already known.
        """
        if self.run is not None:
            return
        if run is None:
            found = peek(hparams_file, overrides, ["output_folder", "save_folder"])
            if not found or not found["output_folder"]:
                return  # load_yaml reports the yaml error; ensure() claims later
            run, save = found["output_folder"], found["save_folder"]
        run = os.path.abspath(str(run))
        if not os.path.isdir(run):
            raise SSLSVError(
                f"--output_folder={run}: no such run folder ({self.role} "
                f"{self.purpose} and creates nothing)"
            )
        if save and not os.path.isdir(save):
            raise SSLSVError(
                f"{save}: no checkpoint folder (--output_folder must be a trained run)"
            )
        out = run
        if self.eval_folder:
            out = os.path.abspath(str(self.eval_folder))
        elif self.subfolder:
            out = os.path.join(run, self.subfolder)
        if out == run:
            unless = f" unless {self.flag} is given" if self.flag else ""
            self.locks.append(
                FolderLock(
                    run,
                    role=self.role,
                    hint=f"wait for it to end; {self.role} writes its results into "
                    f"the run folder{unless}",
                ).acquire()
            )
        else:
            self.locks.append(
                FolderLock(
                    run,
                    shared=True,
                    role=self.role,
                    hint=f"wait for the training to end before running {self.role}",
                ).acquire()
            )
            self.created = make_folder(out, self.flag)
            self.locks.append(
                FolderLock(
                    out,
                    role=self.role,
                    hint=f"wait for it, or use another {self.flag}",
                ).acquire()
            )
        self.run, self.out = run, out

    def ensure(self, hparams):
        """Claim from the loaded ``hparams`` if :meth:`claim` could not; check.

        Returns
        -------
        str
            The folder the results go to.
        """
        run = os.path.abspath(str(hparams["output_folder"]))
        if self.run is None:
            self.claim(None, None, run=run, save=hparams.get("save_folder"))
        elif run != self.run:
            raise SSLSVError(
                f"output_folder resolved to {run} after loading, {self.run} before"
            )
        return self.out

    def close(self):
        """Release the locks; remove the created folders left empty."""
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []
        remove_empty(self.created)


def setup_run_logging(folder):
    """SpeechBrain's logging set-up, with ``<folder>/log.txt`` (appended).

    As ``speechbrain.create_experiment_directory`` (SpeechBrain's
    ``log-config.yaml``: console and file handlers), with the project's console
    handler (:func:`sslsv_sb.recipe.cli.log_overrides`: warnings and errors on
    stderr), and an uncaught exception written to the log file and printed on
    stderr by Python's own hook (SpeechBrain's hook logs it to stdout).
    """
    import speechbrain as sb
    from speechbrain.core import DEFAULT_LOG_CONFIG

    from sslsv_sb.recipe.cli import log_overrides

    log_file = os.path.join(folder, LOG_FILE)
    sb.utils.logger.setup_logging(DEFAULT_LOG_CONFIG, log_overrides(log_file))
    sb.utils.quirks.log_applied_quirks()
    file_logger = logging.getLogger("sslsv_sb.uncaught")
    file_logger.propagate = False
    file_logger.handlers = [
        h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
    ]

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, KeyboardInterrupt):
            file_logger.error("Exception:", exc_info=(exc_type, exc, tb))
        sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = hook
    logger.info("Experiment folder: %s", folder)


def write_env_log(folder, resumed, command):
    """``env.log``: SpeechBrain's environment description, one section per start."""
    import speechbrain as sb

    text = sb.utils.logger.get_environment_description()
    head = f"# {'resumed' if resumed else 'started'} {_now()}: {command}\n"
    mode = "a" if resumed else "w"
    with open(os.path.join(folder, ENV_LOG), mode, encoding="utf-8") as f:
        f.write(("\n" if resumed else "") + head + text)


# ---------------------------------------------------------------------------- stop
class StopRequested(KeyboardInterrupt):
    """Training stopped by a signal (a ``KeyboardInterrupt``: no ``except Exception``
    swallows it).

    Arguments
    ---------
    signum : int
    saved : bool
        Whether a checkpoint was saved at the stop.
    """

    def __init__(self, signum, saved=False):
        super().__init__(signum)
        self.signum = int(signum)
        self.saved = saved

    @property
    def name(self):
        """``"SIGTERM"`` / ``"SIGINT"``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self):
        """``128 + signum``: 143 for SIGTERM, 130 for SIGINT (the shell convention)."""
        return 128 + self.signum

    def message(self):
        """The one line printed on stderr."""
        what = " (checkpoint saved)" if self.saved else ""
        return f"stopped by {self.name}{what}: re-run the same command to resume"


class GracefulStop:
    """SIGTERM / SIGINT: stop training at a step boundary with a checkpoint.

    Outside :meth:`deferred` a signal raises :class:`StopRequested` at once (nothing
    half-written: every file of the run is written atomically). Inside it (the
    training loop) the first signal only sets a flag; after the current step, all
    DDP ranks agree (max over ranks) and stop at the same optimiser-step boundary:
    an intra-epoch checkpoint is saved (SpeechBrain's, as with
    ``--ckpt_interval_steps``), then :class:`StopRequested` ends ``fit``. A second
    signal stops at once.

    Example
    -------
    >>> stop = GracefulStop()
    >>> with stop.installed(), stop.deferred():
    ...     signal.raise_signal(signal.SIGTERM)   # only noted
    ...     noted, stop.signum = stop.signum, None
    >>> noted == signal.SIGTERM
    True
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._deferring = False
        self._stopping = False
        self._previous = {}
        self._brain = None

    def _handler(self, signum, frame):
        del frame
        first = self.signum is None
        if first:
            self.signum = signum
        if self._deferring and first:
            logger.warning(
                "%s received: stopping after this step with a checkpoint (send it "
                "again to stop at once)",
                signal.Signals(signum).name,
            )
            return
        raise StopRequested(signum)

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGTERM and SIGINT in this block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous = {}

    @contextlib.contextmanager
    def deferred(self):
        """A first signal in this block waits for a step boundary (see class)."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False
        if self.signum is not None:  # arrived after the last step
            raise StopRequested(self.signum)

    def _agreed(self, brain):
        """The signal number every rank agrees on (max over ranks), or 0."""
        local = int(self.signum or 0)
        if not is_distributed_initialized():
            return local
        device = brain.device if torch.distributed.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([local], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def attach(self, brain):
        """Check for a stop after every training step of ``brain`` (hooks below).

        Wraps the Brain's ``_should_save_intra_epoch_ckpt`` (called by SpeechBrain's
        ``_fit_train`` after each step, on every rank) and ``_save_intra_epoch_ckpt``
        on this instance: when a stop is agreed and the step ends an optimiser step
        (gradient accumulation complete), the intra-epoch checkpoint is saved and
        :class:`StopRequested` raised.

        Arguments
        ---------
        brain : speechbrain.Brain
        """
        should_save = brain._should_save_intra_epoch_ckpt
        save = brain._save_intra_epoch_ckpt

        def should_save_or_stop(last_ckpt_time, steps_since_ckpt):
            agreed = self._agreed(brain)
            gaf = max(1, int(getattr(brain, "grad_accumulation_factor", 1)))
            if agreed and brain.step % gaf == 0:
                self.signum = agreed
                self._stopping = True
                return True
            return should_save(last_ckpt_time, steps_since_ckpt)

        def save_then_stop():
            if not self._stopping:
                return save()
            saved = brain.checkpointer is not None
            if saved:
                save()
                logger.info(
                    "intra-epoch checkpoint saved at epoch %s, step %s",
                    getattr(brain.hparams.epoch_counter, "current", "?"),
                    brain.step,
                )
            self._deferring = False
            raise StopRequested(self.signum, saved=saved)

        brain._should_save_intra_epoch_ckpt = should_save_or_stop
        brain._save_intra_epoch_ckpt = save_then_stop
        self._brain = brain

    def stop_loader_workers(self):
        """End the loader workers of the interrupted epoch (call after a stop).

        The train loader is a checkpoint recoverable, so its epoch iterator (and its
        workers, which ignore SIGTERM / SIGINT: :func:`ignore_stop_signals_in_workers`)
        would outlive the stop; at interpreter exit PyTorch no longer shuts them
        down and ``multiprocessing`` would wait for them forever.
        """
        ckpt = getattr(self._brain, "checkpointer", None)
        for obj in ckpt.recoverables.values() if ckpt is not None else ():
            iterator = getattr(obj, "_speechbrain_iterator", None)  # SaveableDataLoader
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()


def run_in_folders(folders, work, *args):
    """``work(*args)`` under :class:`GracefulStop`, then release ``folders``.

    The body of ``evaluate.py``, ``downstream.py`` and ``pseudo_labels.py``: a
    SIGTERM / SIGINT ends the work with its exit status (143 / 130, message on
    stderr) instead of a traceback, and the folders' locks are released however
    the work ends.

    Arguments
    ---------
    folders : EvaluationFolders
        Claimed by ``work`` (``load_hparams(before_load=folders.claim)``).
    work : callable
        Returns the script's result.
    *args
        Passed to ``work``.

    Returns
    -------
    object or int
        What ``work`` returns, or the stop signal's exit status.
    """
    try:
        with GracefulStop().installed():
            return work(*args)
    except StopRequested as err:
        print(err.message(), file=sys.stderr)
        return err.exit_code
    finally:
        folders.close()


def ignore_stop_signals_in_workers(loader_kwargs):
    """DataLoader workers ignore SIGTERM / SIGINT (the training process stops them).

    ``torchrun`` sends its SIGTERM to each worker's process group and Ctrl-C reaches
    the whole foreground group: without this, the loader's workers get it too and the
    training process fails with an error of the loader (a worker exited
    unexpectedly, a connection reset) instead of stopping at a step boundary. The
    workers still end with the training process (``stop_loader_workers`` of
    :class:`GracefulStop`; SIGKILL after torchrun's ``--shutdown-timeout``).

    Arguments
    ---------
    loader_kwargs : dict
        DataLoader options; ``worker_init_fn`` is wrapped (changed in place).
    """
    if not loader_kwargs.get("num_workers"):
        return
    loader_kwargs["worker_init_fn"] = _WorkerInit(loader_kwargs.get("worker_init_fn"))


class _WorkerInit:
    """Picklable ``worker_init_fn``: ignore stop signals, then the original."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, worker_id):
        for sig in GracefulStop.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)


__all__ = [
    "run_in_folders",
    "LOCK_NAME",
    "RESUME_MUTABLE",
    "RUN_HPARAMS",
    "EvaluationFolders",
    "FolderLock",
    "GracefulStop",
    "StopRequested",
    "TrainingRunFolder",
    "check_resume",
    "compare_with_record",
    "describe_changes",
    "holder_text",
    "ignore_stop_signals_in_workers",
    "is_run_folder",
    "make_folder",
    "read_lock_info",
    "record_differences",
]
