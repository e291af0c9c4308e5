"""Check a training run's inputs before anything is built, written or trained.

Two entry points, each raising :class:`~sslsv_sb.errors.SSLSVError` (one line naming
the file and line, or the key) so ``train.py`` stops with exit status 2 before the run
folder is touched:

- :func:`check_override_types`, called by
  :func:`sslsv_sb.recipe.hparams.load_yaml` before HyperPyYAML builds any object:
  each ``--key=value`` must have the type of the key's value in the merged yaml
  (the defaults, the blocks and the method file are the schema). An integer key
  takes integers only (``--number_of_epochs=1.5`` is an error), a float key any
  number, a bool key ``True``/``False``, a list key a list (elements of the type
  the yaml's elements share), a mapping key a mapping, a text key any scalar (or
  ``null``). A key whose yaml value is ``null`` takes null or the kind given in
  :data:`NULL_DEFAULT_KINDS` (``--patience=2.5`` is an error), any value if not
  listed; a tagged value (``!ref``, ``!new:`` ...) takes any value; a key the yaml
  does not have is an error naming the closest keys.
- :func:`validate_run`, called by :func:`sslsv_sb.recipe.train.main` right after
  the yaml is loaded, on every DDP rank (each rank reads the same files and reaches
  the same verdict, so all of them stop with the same line): the batch size against
  the number of processes, the augmentation folders and the headers of the files
  the run would load from them, the train list (header, files, audio policy, at
  least one batch), every trial list of the yaml (``trial_lists``,
  ``valid_trial_list``, ``eval_calibration_list``: format, labels, files and their
  audio), the evaluation settings and ``init_from``. Data problems that training
  used to meet only after its last epoch (a malformed trial line, a label ``2``, a
  trial naming a missing file) stop the run before its first step.

The audio policy (``sslsv_sb.data.lists``): every file's header is read when
``check_audio`` is true (the default); an unreadable file or another sample rate
than ``sample_rate`` is an error; multi-channel files are averaged to mono; train
files shorter than ``min_duration`` seconds are dropped (logged with their number);
shorter than a crop, they are wrap-padded.
"""

import difflib
import logging
import os
import re

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError

from sslsv_sb.data.augment import ViewAugment
from sslsv_sb.data.lists import (
    audio_policy_notes,
    multichannel_text,
    read_trials,
    resolve,
)
from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.verification import EvalConfig, read_trial_lists
from sslsv_sb.recipe.trainset import (
    check_train_table,
    loader_options,
    read_train_table,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ override types
def _tagged(value):
    tag = getattr(getattr(value, "tag", None), "value", None)
    return bool(tag) and str(tag).startswith("!")


def _kind(value):
    """Schema kind of a plain yaml value, or None (no check)."""
    if value is None or _tagged(value):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return None


_EXPECTED = {
    "bool": "True or False",
    "int": "an integer",
    "float": "a number",
    "str": "a scalar (text, number or null)",
    "list": "a list, e.g. [a, b]",
    "dict": "a mapping, e.g. {a: 1}",
}

# Keys the yamls set to null by default: their kind when set (null stays allowed).
# lr_schedule takes an object (!name:...), so it is not listed.
NULL_DEFAULT_KINDS = {
    "data_folder": "str",
    "valid_trial_list": "str",
    "label_key": "str",
    "init_from": "str",
    "encoder_checkpoint": "str",
    "language_test_list": "str",
    "patience": "int",
    "eval_crop_seconds": "float",
    "predictor_lr": "float",
}

_EXPECTED_ELEMENTS = {
    "bool": "a list of True/False",
    "int": "a list of integers",
    "float": "a list of numbers",
    "str": "a list of scalars",
}


def _fits(kind, value):
    """Whether ``value`` (a loaded override) fits the schema ``kind``."""
    if _tagged(value):
        return True  # !ref / !new: ... on the command line: HyperPyYAML's business
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return value is None or isinstance(value, str | int | float | bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    return True


def _element_kind(default):
    """The kind every element of a yaml list shares (None if mixed or tagged)."""
    kinds = {_kind(v) for v in default}
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    return kind if kind in ("bool", "int", "float", "str") else None


def _show(value):
    """A value as written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _type_name(value):
    if value is None:
        return "null"
    for cls, name in (
        (bool, "a bool"),
        (int, "an integer"),
        (float, "a float"),
        (str, "text"),
        (list, "a list"),
        (dict, "a mapping"),
    ):
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _load_overrides(overrides, source):
    if isinstance(overrides, dict):
        return overrides
    if not overrides or not str(overrides).strip():
        return {}
    try:
        loaded = YAML(typ="rt").load(overrides)
    except DuplicateKeyError as err:
        found = re.search(r'duplicate key "([^"]+)"', str(err))
        key = found.group(1) if found else "a key"
        raise SSLSVError(f"--{key} is given twice on the command line") from err
    except YAMLError as err:
        msg = " ".join(str(err).split())
        raise SSLSVError(f"{source}: invalid override: {msg}") from err
    return loaded if isinstance(loaded, dict) else {}


def check_override_types(yaml_text, overrides, source="hparams"):
    """Check each override against the type of the key's value in the yaml.

    Arguments
    ---------
    yaml_text : str
        The merged yaml (:func:`sslsv_sb.recipe.hparams.merged_text`).
    overrides : str or dict
        Overrides as yaml text (``key: value`` lines, from
        ``speechbrain.parse_arguments``) or a dict.
    source : str
        Name of the yaml for messages.

    Raises
    ------
    SSLSVError
        ``--key=value: expected <type> (the yaml has key: <default>), got <type>``.

    Example
    -------
    >>> text = "batch_size: 256\\nlr: 0.001\\nchannels: [512, 1536]\\nout: !ref a"
    >>> check_override_types(text, "lr: 1\\nchannels: [8, 24]\\nout: b")
    >>> try:
    ...     check_override_types(text, "batch_size: 1.5")
    ... except SSLSVError as err:
    ...     print(err)
    --batch_size=1.5: expected an integer (the yaml has batch_size: 256), got a float
    """
    values = _load_overrides(overrides, source)
    if not values:
        return
    try:
        schema = YAML(typ="rt").load(yaml_text) or {}
    except YAMLError:
        return  # the loader reports the yaml error itself
    if not isinstance(schema, dict):
        return
    for key, value in values.items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], 3)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?"
            raise SSLSVError(
                f"{source}: unknown hyper-parameter on the command line: --{key} "
                f"(not a key of the yaml or the files it extends"
                f"{hint if close else ''})"
            )
        default = schema[key]
        kind = _kind(default)
        nullable = default is None and key in NULL_DEFAULT_KINDS
        if nullable:
            kind = NULL_DEFAULT_KINDS[key]
        if kind is None:
            continue
        bad, got = None, _type_name(value)
        if not (_fits(kind, value) or (nullable and value is None)):
            bad = _EXPECTED[kind] + (" or null" if nullable and kind != "str" else "")
        elif kind == "list" and not _tagged(value):
            elem = _element_kind(default)
            wrong = [v for v in value if elem and not _fits(elem, v)]
            if wrong:
                bad = _EXPECTED_ELEMENTS[elem]
                got = f"{_show(wrong[0])} ({_type_name(wrong[0])})"
        if bad is not None:
            raise SSLSVError(
                f"--{key}={_show(value)}: expected {bad} (the yaml has "
                f"{key}: {_show(default)}), got {got}"
            )


# ------------------------------------------------------------------------ the run
def _main_process():
    from speechbrain.utils.distributed import if_main_process

    return if_main_process()


def _check_augmentation(hparams, data_folder):
    """Every ``ViewAugment`` of ``modules``: folders and the headers it would load."""
    for module in (hparams.get("modules") or {}).values():
        if isinstance(module, ViewAugment):
            module.check(data_folder, seed=hparams.get("seed", module.seed))


def _check_trial_lists(hparams, data_folder, check_audio):
    """Trial lists of the yaml: format, labels, files (and their audio)."""
    cfg = EvalConfig.from_hparams(hparams)  # bad evaluation settings fail here
    read_trial_lists(cfg, data_folder)  # names, format, labels, files
    paths = [resolve(t, data_folder) for t in cfg.trial_lists]
    if cfg.calibration_list:
        paths.append(resolve(cfg.calibration_list, data_folder))
    valid = hparams.get("valid_trial_list")
    if valid:
        path = resolve(valid, data_folder)
        if not os.path.isfile(path):
            raise SSLSVError(
                f"valid_trial_list: trial list {valid!r} not found (looked for {path})"
            )
        paths.append(path)
    notes = []
    for path in dict.fromkeys(paths):
        trials = read_trials(
            path,
            data_folder,
            sample_rate=hparams["sample_rate"] if check_audio else None,
        )
        if trials.multichannel:
            notes += _log([f"{path}: {multichannel_text(trials.multichannel)}"])
    return notes


def _log(notes):
    """Log ``notes`` as warnings (main process); return them."""
    if notes and _main_process():
        for note in notes:
            logger.warning(note)
    return notes


def _check_init_from(hparams):
    """SSPS ``init_from``: another run's folder holding a checkpoint.

    Only for a run without checkpoints of its own (a resume does not use it).
    """
    init = hparams.get("init_from")
    if not init:
        return
    own = hparams.get("checkpointer")
    if own is not None and own.find_checkpoints():
        return
    save = os.path.join(init, "save")
    save = save if os.path.isdir(save) else init
    if not os.path.isdir(save):
        raise SSLSVError(f"init_from: run folder not found: {init}")
    ckpts = [d for d in os.listdir(save) if d.startswith("CKPT+")]
    if not any(os.path.isfile(os.path.join(save, d, "CKPT.yaml")) for d in ckpts):
        raise SSLSVError(f"init_from: no checkpoint under {save}")


def validate_run(hparams, world=None):
    """Check everything a training run reads, before it builds or writes anything.

    Arguments
    ---------
    hparams : dict
        The loaded yaml (``data_folder``, ``train_list``, ``sample_rate``,
        ``dataloader_options``, ``modules``, ``trial_lists``, ...); optional keys
        ``check_audio`` (default True) and ``min_duration`` (default 0.5 s).
    world : int or None
        Number of training processes (default ``$WORLD_SIZE`` or 1).

    Returns
    -------
    list of str
        What the audio policy did (train files dropped as shorter than
        ``min_duration``, multi-channel files averaged in the train and trial
        lists), each logged as a warning by the main process when found.

    Raises
    ------
    SSLSVError
        The first problem found, naming the file and line or the key.
    """
    data_folder = hparams["data_folder"]
    check_audio = bool(hparams.get("check_audio", True))
    loader_options(hparams, world)  # batch size vs processes, num_workers
    _check_augmentation(hparams, data_folder)
    df, list_path = read_train_table(hparams, data_folder, keep=True)
    notes = _log(audio_policy_notes(df, list_path, hparams["sample_rate"]))
    check_train_table(hparams, df, list_path)
    notes += _check_trial_lists(hparams, data_folder, check_audio)
    _check_init_from(hparams)
    return notes


__all__ = ["check_override_types", "validate_run"]
