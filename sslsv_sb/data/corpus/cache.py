"""Public API: cached generation of a corpus folder and the default location."""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil

from sslsv_sb.data.corpus.config import GENERATOR_VERSION, PRESETS, CorpusConfig
from sslsv_sb.data.corpus.render import render_corpus
from sslsv_sb.errors import SSLSVError

_OUTPUT_NAMES = (
    "wav",
    "noise",
    "rirs",
    ".cache",
    "train.csv",
    "train_sb.csv",
    "test.csv",
    "trials.txt",
    "corpus.json",
    ".incomplete",
)


def default_data_folder():
    """Return the default corpus folder.

    ``$SSLSV_SB_DATA`` if set, else ``<repo root>/data/embedded`` (for a non-editable
    install without a repository: ``~/.cache/sslsv_sb/embedded``).

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get("SSLSV_SB_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    root = pathlib.Path(__file__).resolve().parents[3]  # sslsv_sb/data/corpus/
    if (root / "pyproject.toml").is_file():
        return root / "data" / "embedded"
    return pathlib.Path.home() / ".cache" / "sslsv_sb" / "embedded"


def _config_diff(old, new):
    """Describe the keys that differ between two configuration dicts."""
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in keys
        if old.get(k) != new.get(k)
    )


def _clean(out):
    """Remove every generated file and folder of a corpus folder."""
    for name in _OUTPUT_NAMES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


@contextlib.contextmanager
def _folder_lock(out):
    """Hold an exclusive ``flock`` on ``out/.lock`` (one generator per folder)."""
    import fcntl

    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def generate_corpus(out_dir, config=None, workers=2, overwrite=False, verbose=True):
    """Render the synthetic corpus into ``out_dir`` (or return the cached one).

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Corpus folder (created if missing).
    config : CorpusConfig, optional
        Knobs (the demo size if None).
    workers : int
        Worker processes (the output does not depend on it).
    overwrite : bool
        Replace a corpus with a different configuration (or unknown content
        left by another tool in the generated sub-folders) instead of raising.
    verbose : bool
        Print progress.

    Returns
    -------
    dict
        The manifest (also stored as ``corpus.json``).

    Raises
    ------
    SSLSVError
        If ``out_dir`` holds a corpus with another configuration (or is a non-empty
        folder that is not a corpus) and ``overwrite`` is False, or if
        ``backend="espeak"`` and espeak-ng cannot be loaded.
    """
    cfg = config if config is not None else CorpusConfig()
    if not isinstance(cfg, CorpusConfig):
        raise SSLSVError(f"config must be a CorpusConfig, got {type(cfg).__name__}")
    cfg.validate()
    out = pathlib.Path(out_dir).expanduser().resolve()
    manifest_path = out / "corpus.json"
    want = cfg.to_dict()
    cached = _read_manifest(manifest_path)
    if cached is not None and _matches(cached, want):
        return cached
    if out.exists() and not out.is_dir():
        raise SSLSVError(f"corpus folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        cached = _read_manifest(manifest_path)  # another process may have finished
        if cached is not None and _matches(cached, want):
            return cached
        _prepare_folder(out, manifest_path, cached, want, overwrite)
        return render_corpus(out, cfg, workers, verbose)


def _read_manifest(path):
    """The stored manifest, ``{}`` if unreadable, None if missing."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _matches(manifest, want):
    """True if a stored manifest satisfies the wanted configuration.

    ``backend="auto"`` accepts whatever backend the stored corpus used, and an
    explicit backend accepts an ``"auto"`` corpus that resolved to it.
    """
    have = dict(manifest.get("config") or {})
    if manifest.get("generator_version") != GENERATOR_VERSION:
        return False
    used = manifest.get("backend_used")
    if want.get("backend") in ("auto", used) and have.get("backend") in ("auto", used):
        have["backend"] = want.get("backend")
    return have == want


def _prepare_folder(out, manifest_path, cached, want, overwrite):
    """Empty ``out`` for a new corpus, or raise if that would lose other data."""
    if cached is not None:
        if not overwrite:
            old = cached.get("config") or {}
            diff = _config_diff(old, want) or (
                f"generator version {cached.get('generator_version')!r} -> "
                f"{GENERATOR_VERSION!r}"
            )
            raise SSLSVError(
                f"corpus folder {out} already holds a different corpus "
                f"({manifest_path.name}: {diff}); use another folder or "
                "overwrite=True (--overwrite)"
            )
        _clean(out)
        return
    content = [p for p in out.iterdir() if p.name != ".lock"]
    if not content:
        return
    if (out / ".incomplete").exists() or overwrite:
        _clean(out)  # interrupted run: regenerate from scratch
        return
    raise SSLSVError(
        f"corpus folder {out} is not empty and has no corpus.json "
        f"(found {content[0].name!r}); use an empty folder or overwrite=True "
        "(--overwrite)"
    )


def ensure_corpus(out_dir=None, preset="demo", workers=2, verbose=True, **overrides):
    """Generate the corpus if missing and return its folder.

    Arguments
    ---------
    out_dir : str or pathlib.Path, optional
        Corpus folder (:func:`default_data_folder` if None).
    preset : str
        Name in :data:`PRESETS` (``"demo"`` or ``"tiny"``).
    workers : int
        Worker processes.
    verbose : bool
        Print progress when generating.
    **overrides
        :class:`CorpusConfig` fields replacing the preset's values
        (``overwrite=True`` is passed to :func:`generate_corpus`).

    Returns
    -------
    pathlib.Path
        The corpus folder.
    """
    if preset not in PRESETS:
        raise SSLSVError(
            f"unknown corpus preset {preset!r} (choose from {', '.join(PRESETS)})"
        )
    overwrite = bool(overrides.pop("overwrite", False))
    fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SSLSVError(f"unknown corpus config key(s): {', '.join(unknown)}")
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    out = pathlib.Path(out_dir) if out_dir is not None else default_data_folder()
    generate_corpus(out, cfg, workers=workers, overwrite=overwrite, verbose=verbose)
    return out
