"""Load a recipe's hyper-parameters (HyperPyYAML) from the command line.

A method yaml names the yamls it builds on with a top-level ``extends:`` key (a path
or a list of paths, relative to the yaml's folder)::

    extends: [defaults.yaml, blocks/optim.yaml]

:func:`merged_text` merges them at top level, in order, before HyperPyYAML sees the
text:

- every file extended is merged first (depth first, each file once), then the file's
  own keys; a key set again **replaces** the earlier value where that value stood
  (whole value, no deep merge: a method's ``embedded:`` replaces the default block);
  new keys are appended in their file order, so objects (``!new:``, ``!apply:``,
  ``!include:``, ...) are built in the order the files define them;
- HyperPyYAML cannot use a ``!ref`` value defined further down, so a plain key (no
  object tag; ``!ref`` only to plain keys) that an earlier key refers to is moved
  just above its first user (e.g. a method's ``channels`` above the ``encoder`` that
  replaced a default's placeholder). Moving plain values never changes what is built
  or in which order;
- comments and tags (``!ref``, ``!new:``, ``!name:``, ``!apply:``, ``!include:``)
  are kept as written (text blocks cut at the top-level keys); ``!include:`` paths are
  made absolute, so they stay relative to the file that wrote them;
- ``extends:`` itself is removed.

Every key stays top-level, so ``--key=value`` overrides work for keys set in the
defaults as well as in the method file, and ``!ref <key>`` resolves wherever the key
is set. An unknown override key is still an error. :func:`load_hparams` returns a
merged, standalone copy of the yaml for ``create_experiment_directory`` (the run
folder's ``hyperparams.yaml``).

Errors a user can cause (missing yaml or extended file, unknown ``--key``, bad yaml)
raise :class:`~sslsv_sb.errors.SSLSVError` with one line naming the file and the key.
"""

import atexit
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML, YAMLError
from speechbrain.utils.distributed import run_on_main

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.embeddings import follow_train_precision
from sslsv_sb.recipe.validate import check_override_types

logger = logging.getLogger(__name__)

EXTENDS = "extends"
_INCLUDE = re.compile(r"!include:([^\s,\]\}#]+)")
_MERGED_DIRS = []
_REF = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)")


class _Block:
    """One top-level key of a yaml file, as text.

    ``header`` holds the comment / blank lines written above the key (they stay at
    their place in the file's sequence); ``body`` the key line and its indented
    continuation (value, end-of-line and continuation comments); ``refs`` the
    top-level names its ``!ref`` / ``!copy`` values use; ``tagged`` whether it holds
    a tag other than ``!ref`` (an object, an include, a placeholder, ...).
    """

    def __init__(self, key, header, body, path, refs=(), tagged=False):
        self.key, self.header, self.body, self.path = key, header, body, path
        self.refs, self.tagged = set(refs), tagged


def _scan(node, refs):
    """Collect ``!ref`` names of ``node`` into ``refs``; True if it has other tags."""
    tag = getattr(getattr(node, "tag", None), "value", None) or ""
    tagged = bool(tag.startswith("!")) and tag != "!ref"
    if tag in ("!ref", "!copy"):
        refs.update(_REF.findall(str(getattr(node, "value", ""))))
    if isinstance(node, dict):
        for value in node.values():
            tagged = _scan(value, refs) or tagged
    elif isinstance(node, list):
        for value in node:
            tagged = _scan(value, refs) or tagged
    return tagged


def _absolute_includes(line, folder):
    """``!include:rel.yaml`` -> ``!include:/abs/folder/rel.yaml`` (code part only)."""
    code, sep, comment = line.partition(" #")

    def fix(match):
        path = match.group(1)
        return "!include:" + os.path.normpath(os.path.join(folder, path))

    return _INCLUDE.sub(fix, code) + sep + comment


def _read_blocks(path):
    """Parse ``path`` into its prologue, top-level blocks and ``extends`` entries.

    Arguments
    ---------
    path : str
        Yaml file (absolute).

    Returns
    -------
    (list of str, list of _Block, list of str)
        Lines before the first key, one block per top-level key (in file order) and
        the extended files (absolute paths).
    """
    try:
        with open(path, encoding="utf-8") as fin:
            text = fin.read()
    except OSError as err:
        raise SSLSVError(f"{path}: cannot read ({err.strerror})") from err
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as err:
        msg = " ".join(str(err).split())
        raise SSLSVError(f"{path}: invalid yaml: {msg}") from err
    if doc is None:
        return text.splitlines(keepends=True), [], []
    if not isinstance(doc, dict):
        raise SSLSVError(f"{path}: the top level must be a mapping of keys")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    starts = [doc.lc.key(k)[0] for k in doc]
    folder = os.path.dirname(path)
    blocks, header = [], []
    prologue = lines[: starts[0]] if starts else lines
    # A document start (`---`, `%YAML` directives) is only valid at the very top.
    prologue = [
        line
        for line in prologue
        if line.rstrip() not in ("---", "...") and not line.startswith("%")
    ]
    for i, key in enumerate(doc):
        end = starts[i + 1] if i + 1 < len(starts) else len(lines)
        region = lines[starts[i] : end]
        cut = len(region)
        while cut > 1 and (not region[cut - 1].strip() or region[cut - 1][0] == "#"):
            cut -= 1
        body = [_absolute_includes(line, folder) for line in region[:cut]]
        refs = set()
        tagged = _scan(doc[key], refs)
        blocks.append(_Block(str(key), header, body, path, refs, tagged))
        header = region[cut:]
    trailer = header
    if trailer:
        blocks.append(_Block(None, trailer, [], path))
    extends = doc.get(EXTENDS) or []
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        raise SSLSVError(f"{path}: {EXTENDS}: expected a file name or a list of them")
    bases = []
    for name in extends:
        base = os.path.normpath(os.path.join(folder, name))
        if not os.path.isfile(base):
            raise SSLSVError(f"{path}: {EXTENDS}: {name} not found ({base})")
        bases.append(base)
    return prologue, blocks, bases


def _merge_into(path, entries, index, seen, stack):
    """Append ``path`` (after the files it extends) to the merged ``entries``.

    ``entries`` is a list of text lines (``str``: comments, blank lines) and
    :class:`_Block` (one per key); ``index`` maps a key to its block, so a later
    file's value replaces the earlier one in place.
    """
    seen[path] = None
    prologue, blocks, bases = _read_blocks(path)
    for base in bases:
        if base in stack or base == path:
            chain = " -> ".join(os.path.basename(p) for p in [*stack, path, base])
            raise SSLSVError(f"{path}: {EXTENDS}: circular ({chain})")
        if base not in seen:
            _merge_into(base, entries, index, seen, [*stack, path])
    if stack:  # an extended file: its banner heads its part of the merged text
        entries.extend(["\n", *prologue] if entries else prologue)
    for block in blocks:
        if block.key == EXTENDS:
            continue  # the directive and the comment above it go away
        entries.extend(block.header)
        if block.key is None:
            continue
        if block.key in index:
            old = index[block.key]
            old.body, old.path = block.body, block.path
            old.refs, old.tagged = block.refs, block.tagged
        else:
            index[block.key] = block
            entries.append(block)
    return prologue, bases


def _plain_keys(blocks):
    """Keys whose value builds nothing: no object tag, ``!ref`` only to such keys."""
    plain = {k for k, b in blocks.items() if not b.tagged}
    changed = True
    while changed:
        changed = False
        for key in list(plain):
            if any(r in blocks and r not in plain for r in blocks[key].refs):
                plain.discard(key)
                changed = True
    return plain


def _hoist_plain(entries):
    """Move each plain key just above the first key that needs it (see module doc).

    A key is needed where the first key referring to it stands, or earlier when
    that key is an object first used (and so built) higher up.
    """
    blocks = {e.key: e for e in entries if isinstance(e, _Block)}
    plain = _plain_keys(blocks)
    users = {
        k: [u for u, b in blocks.items() if k in b.refs and u != k] for k in blocks
    }
    for _ in range(len(entries) * len(entries) + 1):
        pos = {e.key: i for i, e in enumerate(entries) if isinstance(e, _Block)}
        need = dict(pos)  # where each key is first used (built), at the latest
        changed = True
        while changed:
            changed = False
            for key in blocks:
                first = min([need[u] for u in users[key]], default=pos[key])
                if first < need[key]:
                    need[key], changed = first, True
        late = [k for k in plain if need[k] < pos[k]]
        if not late:
            return entries
        key = min(late, key=lambda k: (need[k], pos[k]))
        block = entries.pop(pos[key])
        target = need[key]
        while target > 0 and not isinstance(entries[target - 1], _Block):
            target -= 1  # above the user's comment lines, below the previous key
        entries.insert(target, block)
    raise SSLSVError("cannot order the merged yaml: circular !ref between plain keys")


def merged_text(hparams_file):
    """The yaml text of ``hparams_file`` merged over the files it ``extends``.

    Arguments
    ---------
    hparams_file : str
        Method yaml (a yaml without ``extends:`` is returned as written, with
        ``!include:`` paths made absolute).

    Returns
    -------
    str
        Standalone HyperPyYAML text: the method file's banner, a comment naming the
        merged files, then every key (defaults first, method keys winning in place).

    Raises
    ------
    SSLSVError
        Unreadable or invalid file, missing or circular ``extends`` entry.
    """
    path = os.path.abspath(hparams_file)
    entries, index, seen = [], {}, {}
    prologue, bases = _merge_into(path, entries, index, seen, [])
    merged = [p for p in seen if p != path]  # merge order
    note = []
    if bases:
        names = ", ".join(os.path.relpath(p, os.path.dirname(path)) for p in merged)
        note = [
            f"# Merged by sslsv_sb.recipe.hparams: {path}\n",
            f"# over {names} (in this order; later files win)\n",
        ]
    entries = _hoist_plain(entries)
    body = "".join("".join(e.body) if isinstance(e, _Block) else e for e in entries)
    return "".join(note) + "".join(prologue) + body


def _code(lines):
    """Value text without comments and blank lines (to compare two values)."""
    out = []
    for line in lines:
        if not line.lstrip().startswith("#"):
            code = line.partition(" #")[0].rstrip()
            if code.strip():
                out.append(code)
    return "\n".join(out)


def repeated_keys(hparams_file):
    """Keys ``hparams_file`` sets to the value it already gets from its ``extends``.

    Arguments
    ---------
    hparams_file : str

    Returns
    -------
    list of str
        Keys written with the same value (comments aside) as in the merged files
        the yaml extends: lines a method yaml can drop.
    """
    path = os.path.abspath(hparams_file)
    _, blocks, bases = _read_blocks(path)
    entries, index, seen = [], {}, {}
    for base in bases:
        if base not in seen:
            _merge_into(base, entries, index, seen, [path])
    return [
        b.key
        for b in blocks
        if b.key in index
        and b.key != EXTENDS
        and _code(b.body) == _code(index[b.key].body)
    ]


def top_level_keys(hparams_file):
    """Top-level keys of the merged ``hparams_file`` (no object is built).

    Arguments
    ---------
    hparams_file : str

    Returns
    -------
    list of str
        Keys in merged order.
    """
    doc = YAML(typ="rt").load(merged_text(hparams_file))
    return [str(k) for k in doc or {}]


def key_references(hparams_file):
    """``{key: top-level keys its value refers to}`` of the merged ``hparams_file``.

    Arguments
    ---------
    hparams_file : str

    Returns
    -------
    dict
        Direct ``!ref`` / ``!copy`` references of each top-level key (values passed
        to an ``!include:`` included), e.g. ``{"save_folder": {"output_folder"}}``.
    """
    entries, index, seen = [], {}, {}
    _merge_into(os.path.abspath(hparams_file), entries, index, seen, [])
    return {k: set(b.refs) for k, b in index.items() if k != EXTENDS}


def resolved_text(hparams_file, overrides=None):
    """The merged yaml with ``overrides`` applied and references resolved, as text.

    HyperPyYAML's ``resolve_references`` (what ``create_experiment_directory``
    writes as a run's ``hyperparams.yaml``): ``!ref`` / ``!copy`` replaced by their
    values, ``!include:`` inlined, object tags kept; nothing is built.

    Arguments
    ---------
    hparams_file : str
        Yaml (merged over its ``extends``, :func:`merged_text`).
    overrides : str, dict or None
        Yaml text of ``key: value`` lines or a dict.

    Returns
    -------
    str
    """
    from hyperpyyaml import resolve_references

    stream = _named_stream(merged_text(hparams_file), hparams_file)
    return resolve_references(stream, overrides or None).getvalue()


def _named_stream(text, name):
    stream = io.StringIO(text)
    stream.name = name  # HyperPyYAML resolves relative !include: from this folder
    return stream


def load_yaml(hparams_file, overrides):
    """Load ``hparams_file`` (merged over its ``extends``) with ``overrides``.

    Arguments
    ---------
    hparams_file : str
        Path of the yaml.
    overrides : str or dict
        Overrides (yaml text ``"key: value"`` lines, as returned by
        ``speechbrain.parse_arguments``, or a dict).

    Returns
    -------
    dict
        The loaded hyper-parameters (objects built).

    Raises
    ------
    SSLSVError
        Unknown override key, override of the wrong type
        (:func:`~sslsv_sb.recipe.validate.check_override_types`), invalid yaml /
        override value, bad ``extends``.
    """
    text = merged_text(hparams_file)
    check_override_types(text, overrides, hparams_file)  # before any object is built
    try:
        return load_hyperpyyaml(_named_stream(text, hparams_file), overrides)
    except KeyError as err:
        raise SSLSVError(
            f"{hparams_file}: unknown hyper-parameter on the command line: {err}"
        ) from err
    except YAMLError as err:
        msg = " ".join(str(err).split())
        raise SSLSVError(f"{hparams_file}: invalid yaml or override: {msg}") from err
    except ValueError as err:
        found = re.search(r"'(\w+)' is a !PLACEHOLDER", str(err))
        if not found:
            raise
        key = found.group(1)
        raise SSLSVError(
            f"{hparams_file}: {key} has no value (!PLACEHOLDER): give --{key}=..."
        ) from err


def write_merged(hparams_file, folder=None):
    """Write the merged yaml to a standalone file; return its path.

    A yaml without ``extends:`` is returned unchanged. Otherwise the merged text
    (:func:`merged_text`) goes to ``<folder>/<file name>``; without ``folder``, to a
    private temporary folder removed when the process exits.

    Arguments
    ---------
    hparams_file : str
    folder : str or None

    Returns
    -------
    str
        Path of a yaml that loads alone (what ``create_experiment_directory`` copies).
    """
    _, _, bases = _read_blocks(os.path.abspath(hparams_file))
    if not bases:
        return hparams_file
    if folder is None:
        folder = tempfile.mkdtemp(prefix="sslsv_sb_hparams_")
        if not _MERGED_DIRS:
            atexit.register(_remove_merged_dirs)
        _MERGED_DIRS.append(folder)
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, os.path.basename(hparams_file))
    with open(out, "w", encoding="utf-8") as fout:
        fout.write(merged_text(hparams_file))
    return out


def _remove_merged_dirs():
    for folder in _MERGED_DIRS:
        shutil.rmtree(folder, ignore_errors=True)


def load_hparams(argv, recipe_dir=None, before_load=None):
    """Parse the command line and load the yaml (errors name the offending key).

    The yaml is merged over the files it ``extends`` (:func:`merged_text`). Without a
    data folder, the embedded corpus is generated if missing and the yaml's
    ``embedded:`` values are applied as if given on the command line (explicit
    command-line values win), so objects built from them see the right values.

    Arguments
    ---------
    argv : list of str
        ``[hparams_file, --key=value, ...]`` (SpeechBrain run options included).
    recipe_dir : str or None
        Folder tried for ``hparams_file`` when it is not found from the current
        directory (e.g. the recipe's folder, for ``hparams/simclr_ecapa.yaml``).
    before_load : callable or None
        ``before_load(hparams_file, overrides)``, called once the command line is
        parsed (and the DDP group set up), before the yaml builds any object (its
        ``Checkpointer`` creates ``save_folder``): the scripts claim or check their
        output folder there (:mod:`sslsv_sb.recipe.runfolder`).

    Returns
    -------
    (str, speechbrain RunOptions, str, dict)
        A yaml file holding the merged hyper-parameters (the given file itself when
        it extends nothing; pass it to ``create_experiment_directory``), the run
        options, the overrides (yaml text, embedded-corpus values included) and the
        loaded hyper-parameters.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    run_opts = follow_train_precision(run_opts)  # bf16 eval when training in bf16
    if not os.path.isfile(hparams_file):
        alt = os.path.join(recipe_dir, hparams_file) if recipe_dir else None
        if alt and os.path.isfile(alt):
            hparams_file = alt
        else:
            raise SSLSVError(f"hparams file not found: {hparams_file}")
    sb.utils.distributed.ddp_init_group(run_opts)
    if before_load is not None:
        before_load(hparams_file, overrides)
    hparams = load_yaml(hparams_file, overrides)
    if not hparams.get("data_folder"):
        from sslsv_sb.data.corpus import default_data_folder, ensure_corpus

        preset = hparams.get("corpus_preset", "demo")
        knobs = dict(hparams.get("corpus") or {})
        # One folder per (preset, knobs): a multilingual or resized corpus never
        # collides with the default demo corpus.
        name = preset
        if knobs:
            digest = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode())
            name = f"{preset}-{digest.hexdigest()[:8]}"
        corpus_kwargs = {
            "out_dir": os.path.join(default_data_folder(), name),
            "preset": preset,
            **knobs,
        }
        folder = run_on_main(ensure_corpus, kwargs=corpus_kwargs)
        folder = str(folder or ensure_corpus(**corpus_kwargs))
        given = {line.split(":")[0].strip() for line in overrides.splitlines()}
        extra = {k: v for k, v in hparams.get("embedded", {}).items() if k not in given}
        extra["data_folder"] = folder
        lines = [overrides] if overrides.strip() else []
        lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
        overrides = "\n".join(lines)
        logger.info("no data_folder given: using the embedded corpus %s", folder)
        hparams = load_yaml(hparams_file, overrides)
    if not os.path.isdir(hparams["data_folder"]):
        raise SSLSVError(
            f"data folder not found: {hparams['data_folder']} (--data_folder)"
        )
    return write_merged(hparams_file), run_opts, overrides, hparams
