"""Comparison settings and their translation into an sslsv configuration (pure).

A side-by-side run only means something when both toolkits train the same model on
the same data with the same budget. The comparison therefore fixes **every**
setting the two toolkits share:

- :func:`our_settings` gives the project's values for a method (the demo budget of
  the ``Makefile`` plus the method's recipe hyper-parameters, the embedded corpus's
  values when it is used), updated by the user's overrides. The tool passes each of
  them explicitly to ``recipes/VoxCeleb/SSL/train.py`` (:func:`our_cli_args`), so
  the recipe yaml's own defaults play no part and a renamed key fails loudly;
- :func:`to_sslsv` writes the same values into an sslsv ``config.yml``
  (``sslsv/Config.py`` and the method / encoder / dataset / trainer dataclasses
  name the keys) and returns one :class:`Row` per setting for the settings table.
  Settings that exist on one side only (sslsv has no EQ augmentation and no global
  gradient clipping; the project has no ``clip_grad`` outside DINO, ...) are listed
  with the other side's fixed behaviour and flagged when the two differ.

Nothing here reads files or runs anything: :mod:`sslsv_sb.sslsv_compare.compare`
does the I/O. The methods of the comparison table are the keys of :data:`METHODS`.

Example
-------
>>> ours, extra = our_settings("simclr", "ecapa", overrides={"temperature": 0.05})
>>> ours["temperature"], ours["frame_length"], extra
(0.05, 16000, {})
>>> budget = make_budget(n_train=1440, batch_size=64, epochs=11)
>>> budget.steps_per_epoch, budget.steps, budget.step_limit
(22, 242, None)
>>> result = to_sslsv("simclr", "ecapa", ours, budget)
>>> result.config["method"]
{'type': 'simclr', 'temperature': 0.05, 'enable_projector': False}
"""

import math
from dataclasses import dataclass, field

from sslsv_sb.errors import SSLSVError

#: Name of the train list sslsv reads in the data view (same rows as ours).
VIEW_TRAIN_LIST = "sslsv_train.csv"
#: Name of the trial list sslsv reads in the data view (same trials as ours).
VIEW_TRIAL_LIST = "sslsv_trials.txt"
#: The data view's folder, relative to the sslsv work folder (sslsv's default
#: ``dataset.base_path`` is ``./data/``, resolved against the working directory).
VIEW_DIR = "data"

#: The demo budget of the ``Makefile`` (``DEMO_ARGS``) with the settings of the
#: side-by-side runs of issue 14: 80 mel bins, no EQ (sslsv has none), fp32 (sslsv's
#: autocast is commented out), no global gradient clipping (sslsv has none), seed 1717.
COMMON_DEFAULTS = {
    "seed": 1717,
    "batch_size": 64,
    "frame_length": 16000,
    "lr": 0.001,
    "weight_decay": 0.0,
    "optimizer_type": "adam",
    "n_mels": 80,
    "aug_prob": 1.0,
    "strategy": "reverb+noise",
    "eq_prob": 0.0,
    "num_workers": 0,
    "precision": "fp32",
    "max_grad_norm": math.inf,
}

#: Encoder sizes: the demo's ECAPA-TDNN (C=256, 192-d) and sslsv's Fast ResNet-34.
ENCODER_DEFAULTS = {
    "ecapa": {"channels": [256, 256, 256, 256, 768], "emb_dim": 192},
    "resnet34": {"base_channels": 16, "emb_dim": 512},
}

#: Data-folder defaults: the embedded corpus's layout (the yamls' ``embedded:``
#: block) or the VoxCeleb layout of the yamls.
EMBEDDED_PATHS = {
    "train_list": "train.csv",
    "trial_lists": ["trials.txt"],
    "noise_folder": "noise",
    "rir_folder": "rirs",
}
VOXCELEB_PATHS = {
    "train_list": "voxceleb2_train.csv",
    "trial_lists": ["voxceleb1_test_O.txt"],
    "noise_folder": "musan_split",
    "rir_folder": "simulated_rirs",
}

#: Augmentation constants of ``recipes/VoxCeleb/SSL/hparams/blocks/augment.yaml``
#: (not top-level keys, so not overridable from the command line): SNR ranges in dB
#: per MUSAN category and the number of babble speakers. sslsv gets the same values.
OUR_AUGMENT_CONSTANTS = {
    "snr_noise": [0, 15],
    "snr_music": [5, 15],
    "snr_speech": [13, 20],
    "babble": [1, 1],
}

#: Methods trained on frame-level encoder outputs (ResNet-34 without pooling).
_FRAME_LEVEL = ("cpc",)

#: Projector shared by the Siamese-family recipes (Linear-BN-ReLU x2 + Linear).
_PROJECTOR = {"proj_hidden_dim": 2048, "proj_out_dim": 512, "proj_n_hidden": 2}


@dataclass(frozen=True)
class MethodEntry:
    """One method of the comparison table.

    Attributes
    ----------
    label : str
        Display name with the paper's arXiv id.
    sslsv_type : str
        ``method.type`` in sslsv (``sslsv/utils/helpers.py`` REGISTERED_METHODS).
    encoders : tuple of str
        Encoders compared (``<method>_<encoder>.yaml`` exists for each).
    defaults : dict
        The method's settings on our side (recipe values, demo extras of
        ``recipes/VoxCeleb/SSL/README.md``).
    embedded : dict
        Values replacing ``defaults`` on the embedded corpus (the yaml's
        ``embedded:`` block).
    """

    label: str
    sslsv_type: str
    encoders: tuple
    defaults: dict
    embedded: dict = field(default_factory=dict)


METHODS = {
    "simclr": MethodEntry(
        "SimCLR (arXiv 2002.05709)",
        "simclr",
        ("ecapa", "resnet34"),
        {"temperature": 0.07},
    ),
    "moco": MethodEntry(
        "MoCo v2+ (arXiv 2003.04297)",
        "moco",
        ("ecapa", "resnet34"),
        {
            "temperature": 0.07,
            "queue_size": 1024,
            "start_tau": 0.999,
            "end_tau": 1.0,
            "tau_scheduler": False,
            "prevent_class_collisions": False,
            # sslsv runs in one process, where its batch shuffle leaves BatchNorm
            # statistics unchanged: the project's single-process emulation is off.
            "shuffle_bn_splits": 1,
        },
    ),
    "dino": MethodEntry(
        "DINO (arXiv 2104.14294)",
        "dino",
        ("ecapa",),
        {
            "optimizer_type": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 0.00005,
            "no_weight_decay_bias_norm": True,
            "warmup_cosine": False,
            "warmup_epochs": 10,
            "min_lr": 0.00001,
            "strategy": "all",
            "n_global": 2,
            "n_local": 4,
            "local_length": 8000,
            "head_hidden_dim": 2048,
            "head_bottleneck_dim": 256,
            "head_out_dim": 65536,
            "head_n_layers": 3,
            "head_use_bn": True,
            "student_temp": 0.1,
            "teacher_temp": 0.04,
            "warmup_teacher_temp": 0.04,
            "warmup_teacher_temp_epochs": 10,
            "center_momentum": 0.9,
            "start_tau": 0.996,
            "end_tau": 1.0,
            "tau_scheduler": True,
            "freeze_last_layer": 1,
            "clip_grad": 3.0,
        },
        {"head_out_dim": 4096},
    ),
    "byol": MethodEntry(
        "BYOL (arXiv 2006.07733)",
        "byol",
        ("ecapa",),
        {
            "start_tau": 0.996,
            "end_tau": 1.0,
            "tau_scheduler": True,
            **_PROJECTOR,
            "pred_hidden_dim": 4096,
        },
    ),
    "simsiam": MethodEntry(
        "SimSiam (arXiv 2011.10566)",
        "simsiam",
        ("ecapa",),
        {
            **_PROJECTOR,
            "pred_hidden_dim": 512,
            "predictor_fixed_lr": True,
            "predictor_lr": None,
        },
    ),
    "vicreg": MethodEntry(
        "VICReg (arXiv 2105.04906)",
        "vicreg",
        ("ecapa",),
        {"inv_weight": 1.0, "var_weight": 1.0, "cov_weight": 0.1, **_PROJECTOR},
    ),
    "barlow_twins": MethodEntry(
        "Barlow Twins (arXiv 2103.03230)",
        "barlow_twins",
        ("ecapa",),
        {"lambd": 0.005, "loss_scale": 0.025, **_PROJECTOR},
    ),
    "cpc": MethodEntry(
        "CPC (arXiv 1807.03748)",
        "cpc",
        ("resnet34",),
        {
            "temperature": 1.0,
            "cpc_normalize": False,
            "cpc_n_predict": 4,
            "cpc_aggregator": "gru",
            "cpc_hidden": 256,
            "cpc_layers": 1,
            "cpc_bidirectional": False,
            "cpc_mode": "two_crop",
        },
    ),
    "swav": MethodEntry(
        "SwAV (arXiv 2006.09882)",
        "swav",
        ("ecapa",),
        {
            "temperature": 0.1,
            "n_prototypes": 6000,
            "sk_iters": 3,
            "sk_epsilon": 0.05,
            "queue_size": 3840,
            "queue_start_epoch": 15,
            "freeze_prototypes_epochs": 1,
            **_PROJECTOR,
        },
        {"n_prototypes": 120, "queue_size": 512},
    ),
}


def method_entry(method, encoder=None):
    """The :class:`MethodEntry` of ``method`` (checking ``encoder`` if given).

    Raises
    ------
    SSLSVError
        For a method or encoder outside the comparison table.
    """
    if method not in METHODS:
        raise SSLSVError(
            f"--method: {method!r} is not in the comparison table; choose from "
            f"{', '.join(METHODS)}"
        )
    entry = METHODS[method]
    if encoder is not None and encoder not in entry.encoders:
        raise SSLSVError(
            f"--encoder: {encoder!r} is not compared for {method}; choose from "
            f"{', '.join(entry.encoders)}"
        )
    return entry


def yaml_name(method, encoder):
    """Our recipe yaml of a (method, encoder) pair, e.g. ``simclr_ecapa.yaml``."""
    method_entry(method, encoder)
    return f"{method}_{encoder}.yaml"


def our_settings(method, encoder, embedded=True, overrides=None):
    """The project's settings of a comparison run, as ``{yaml key: value}``.

    Arguments
    ---------
    method, encoder : str
        A method of :data:`METHODS` and one of its encoders.
    embedded : bool
        True on the embedded corpus (its list names, bank folders and the yamls'
        ``embedded:`` values), False on a VoxCeleb-style data folder.
    overrides : dict or None
        ``{key: value}`` replacing settings (applied last, so they win).

    Returns
    -------
    settings : dict
        Every mapped setting (keys of our yamls or SpeechBrain run options).
    extra : dict
        Overrides that are not mapped settings: passed to our side only, and shown
        as unmapped in the settings table.
    """
    entry = method_entry(method, encoder)
    ours = dict(COMMON_DEFAULTS)
    ours.update(ENCODER_DEFAULTS[encoder])
    ours.update(entry.defaults)
    if embedded:
        ours.update(entry.embedded)
    ours.update(EMBEDDED_PATHS if embedded else VOXCELEB_PATHS)
    extra = {}
    for key, value in (overrides or {}).items():
        if key in ("number_of_epochs", "optimizer_step_limit"):
            raise SSLSVError(
                f"--overrides {key}: the budget is set with --steps / --epochs, "
                "for both toolkits at once"
            )
        if key in ours:
            ours[key] = value
        else:
            extra[key] = value
    if isinstance(ours["trial_lists"], str):
        ours["trial_lists"] = [ours["trial_lists"]]
    return ours, extra


@dataclass(frozen=True)
class Budget:
    """Equal optimiser-step budget of both toolkits.

    Both loaders drop the last incomplete batch (our ``dataloader_options``
    ``drop_last: True``; sslsv's ``load_train_dataloader``), so an epoch is
    ``n_train // batch_size`` steps on both sides. A budget that is not a whole
    number of epochs trains ``epochs = ceil(steps / steps_per_epoch)`` epochs'
    worth of schedule (LR decay, EMA momentum, temperatures) and stops both
    toolkits after ``steps`` optimiser steps (ours: SpeechBrain's
    ``--optimizer_step_limit``; sslsv: the runner's loader limit).

    Attributes
    ----------
    n_train, batch_size, steps_per_epoch, epochs, steps : int
    """

    n_train: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    steps: int

    @property
    def step_limit(self):
        """Optimiser steps to stop at, or None when the budget is whole epochs."""
        return None if self.steps == self.epochs * self.steps_per_epoch else self.steps


def make_budget(n_train, batch_size, steps=None, epochs=None):
    """Budget of ``steps`` optimiser steps or ``epochs`` epochs (exactly one).

    Raises
    ------
    SSLSVError
        If both or neither are given, one is < 1, or the list is smaller than a
        batch.
    """
    n_train, batch_size = int(n_train), int(batch_size)
    if (steps is None) == (epochs is None):
        raise SSLSVError("give exactly one of --steps and --epochs")
    if batch_size < 1:
        raise SSLSVError(f"batch_size must be >= 1, got {batch_size}")
    per_epoch = n_train // batch_size
    if per_epoch < 1:
        raise SSLSVError(
            f"the train list has {n_train} utterances, fewer than one batch of "
            f"{batch_size} (lower batch_size with --overrides batch_size=N)"
        )
    if steps is not None:
        if int(steps) < 1:
            raise SSLSVError(f"--steps must be >= 1, got {steps}")
        steps = int(steps)
        return Budget(n_train, batch_size, per_epoch, -(-steps // per_epoch), steps)
    if int(epochs) < 1:
        raise SSLSVError(f"--epochs must be >= 1, got {epochs}")
    epochs = int(epochs)
    return Budget(n_train, batch_size, per_epoch, epochs, epochs * per_epoch)


def lr_drop_epochs_ours(epochs, drop=5, scheduler=None):
    """0-based epochs at which our step LR schedule lowers the learning rate.

    Simulates how ``SSLBrain.on_stage_end`` uses the recipes' ``lr_annealing``
    (:class:`sslsv_sb.schedules.EpochStepDecay` in ``blocks/optim.yaml``, factor 0.95,
    ``decay_drop`` 5): called with the 1-based epoch ``e`` that ended, it sets the LR of
    0-based epoch ``e``. ``scheduler`` defaults to that schedule.
    """
    if scheduler is None:
        from sslsv_sb.schedules import EpochStepDecay

        scheduler = EpochStepDecay(1.0, 0.95, drop)
    lrs = [1.0] + [scheduler(e)[1] for e in range(1, epochs)]
    return [k for k in range(1, epochs) if lrs[k] < lrs[k - 1]]


def lr_drop_epochs_sslsv(epochs, drop=5):
    """0-based epochs at which sslsv's ``default`` LR schedule lowers the LR.

    sslsv's ``BaseMethod.update_optim`` uses ``lr * 0.95 ** ((step // steps per
    epoch) // 5)``: 0-based epoch ``k`` trains at exponent ``k // 5``, the first drop
    is at ``k = 5``.
    """
    return [k for k in range(1, epochs) if k // drop > (k - 1) // drop]


@dataclass
class Row:
    """One line of the settings table.

    Attributes
    ----------
    setting : str
        What is compared.
    ours_key, sslsv_key : str or None
        Our yaml key / run option, sslsv's dotted config path (None: a fixed
        behaviour with no setting on that side).
    ours, sslsv : object
        The value (or the fixed behaviour) on each side.
    same : bool
        False flags a difference.
    note : str
        Why they differ, or where a fixed behaviour comes from.
    """

    setting: str
    ours_key: object
    ours: object
    sslsv_key: object
    sslsv: object
    same: bool
    note: str = ""


@dataclass
class SslsvMapping:
    """Result of :func:`to_sslsv`.

    Attributes
    ----------
    config : dict
        The sslsv ``config.yml`` content (YAML-serialisable).
    fixups : dict
        ``{dotted path: list}`` for sslsv's tuple-typed fields, which its yaml
        loader cannot read (dacite wants a tuple, YAML gives a list): the runner
        sets them on the loaded config before anything uses them.
    rows : list of Row
    """

    config: dict
    fixups: dict
    rows: list

    def differing(self):
        """The rows flagged as different."""
        return [r for r in self.rows if not r.same]


def same_value(a, b):
    """Equality for settings: floats with a relative tolerance, lists elementwise."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _cast(kind):
    def cast(key, value):
        try:
            if kind is bool:
                if not isinstance(value, bool):
                    raise TypeError(f"expected true/false, got {value!r}")
                return value
            if kind is int:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError(f"expected an integer, got {value!r}")
                return int(float(value))
            if kind is float:
                if isinstance(value, bool):
                    raise TypeError(f"expected a number, got {value!r}")
                return float(value)
            if kind is list:
                if not isinstance(value, list | tuple):
                    raise TypeError(f"expected a list, got {value!r}")
                return [_cast(int)(key, v) for v in value]
            return str(value)
        except (TypeError, ValueError) as err:
            raise SSLSVError(f"setting {key}: {err}") from err

    return cast


_INT, _FLOAT, _BOOL, _INTS, _STR = (
    _cast(int),
    _cast(float),
    _cast(bool),
    _cast(list),
    _cast(str),
)


class _Builder:
    """Collects the sslsv config, its tuple fix-ups and the table rows."""

    def __init__(self, ours):
        self.ours = ours
        self.config = {}
        self.fixups = {}
        self.rows = []

    def put(self, path, value):
        node = self.config
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def same(self, key, path, cast, setting=None, note=""):
        """Our ``key`` maps to sslsv ``path`` with the same value."""
        value = cast(key, self.ours[key])
        self.put(path, value)
        self.rows.append(
            Row(setting or key, key, self.ours[key], path, value, True, note)
        )
        return value

    def fixed(self, key, sslsv_behaviour, setting=None, note=""):
        """Our ``key`` has no sslsv setting: sslsv always behaves as given."""
        value = self.ours[key]
        self.rows.append(
            Row(
                setting or key,
                key,
                value,
                None,
                sslsv_behaviour,
                same_value(value, sslsv_behaviour),
                note,
            )
        )

    def sslsv_only(self, path, value, setting, ours_behaviour, same=True, note=""):
        """An sslsv setting with no key on our side (ours behaves as described)."""
        self.put(path, value)
        self.rows.append(Row(setting, None, ours_behaviour, path, value, same, note))

    def info(self, setting, ours, sslsv, same=True, note="", ours_key=None):
        """A row without a config entry (budget, data, derived facts)."""
        self.rows.append(Row(setting, ours_key, ours, None, sslsv, same, note))


def to_sslsv(method, encoder, ours, budget, bank=None, threads=None):
    """Translate our settings into an sslsv configuration.

    Arguments
    ---------
    method, encoder : str
        A method of :data:`METHODS` and one of its encoders.
    ours : dict
        :func:`our_settings` output (possibly with overrides).
    budget : Budget
        Equal step budget (:func:`make_budget`).
    bank : dict or None
        Augmentation banks found on disk: ``{"noise": n, "music": n, "speech": n,
        "rir": n}`` file counts (used for rows and to cap sslsv's babble count to the
        speech files available: sslsv draws them without replacement).
    threads : int or None
        Torch threads of both runs (a table row).

    Returns
    -------
    SslsvMapping

    Raises
    ------
    SSLSVError
        When sslsv cannot run the settings at all (e.g. a MoCo queue that is not a
        multiple of the batch, an optimiser sslsv does not have).
    """
    entry = method_entry(method, encoder)
    b = _Builder(ours)
    b.same("seed", "seed", _INT)
    b.put("reproducibility", False)
    _map_budget(b, budget)
    _map_optim(b, method, budget)
    _map_encoder(b, encoder, method)
    _map_data(b, method, bank)
    b.put("method.type", entry.sslsv_type)
    _METHOD_MAPPERS[method](b, budget)
    b.put("evaluation.validation", [])
    b.put("evaluation.test", [])
    b.info(
        "validation during training",
        "none (valid_trial_list: null)",
        "none (evaluation.validation: [])",
    )
    b.info(
        "scoring",
        "cosine, full utterances (verification.json)",
        "cosine, full utterances (sv_cosine, frame_length: null)",
        note="both scored by the project's metrics on the same trials",
    )
    if threads is not None:
        b.info("torch threads", threads, threads)
    return SslsvMapping(b.config, b.fixups, b.rows)


def _map_budget(b, budget):
    b.put("trainer.epochs", budget.epochs)
    b.info(
        "train utterances / batch",
        f"{budget.n_train} / {budget.batch_size} (drop_last)",
        f"{budget.n_train} / {budget.batch_size} (drop_last)",
    )
    b.info("steps per epoch", budget.steps_per_epoch, budget.steps_per_epoch)
    b.rows.append(
        Row(
            "epochs",
            "number_of_epochs",
            budget.epochs,
            "trainer.epochs",
            budget.epochs,
            True,
        )
    )
    limit = budget.step_limit
    b.info(
        "optimiser steps",
        budget.steps if limit is None else f"{limit} (--optimizer_step_limit)",
        budget.steps if limit is None else f"{limit} (runner loader limit)",
        note="" if limit is None else "schedules span the whole epochs",
    )
    # Early stopping never triggers: sslsv counts epochs without improvement of a
    # validation metric that is not computed here.
    b.sslsv_only(
        "trainer.patience",
        budget.epochs + 1,
        "early stopping",
        "off (patience: null)",
        note="sslsv: patience > epochs",
    )


def _map_optim(b, method, budget):
    b.same("batch_size", "trainer.batch_size", _INT)
    opt = b.same("optimizer_type", "trainer.optimizer", _STR, "optimizer").lower()
    if opt not in ("adam", "adamw", "sgd"):
        raise SSLSVError(f"optimizer_type: {opt!r} is not adam, adamw or sgd")
    b.put("trainer.optimizer", opt)
    b.same("lr", "trainer.learning_rate", _FLOAT, "learning rate")
    b.same("weight_decay", "trainer.weight_decay", _FLOAT, "weight decay")
    if opt == "sgd":
        if "momentum" in b.ours:
            b.fixed("momentum", 0.9, "SGD momentum", "sslsv: SGD(momentum=0.9)")
        else:
            b.info("SGD momentum", "0.9 (make_optimizer default)", 0.9)
    if b.ours.get("warmup_cosine"):
        b.put("trainer.learning_rate_sched", "warmup+cosine")
        b.same("warmup_epochs", "trainer.learning_rate_warmup", _INT, "LR warm-up")
        b.same("min_lr", "trainer.learning_rate_min", _FLOAT, "final LR")
        b.info(
            "LR schedule",
            "per-step linear warm-up + cosine (warmup_cosine: True)",
            "warmup+cosine",
        )
    else:
        b.put("trainer.learning_rate_sched", "default")
        b.info(
            "LR schedule",
            "x0.95 every 5 epochs (lr_annealing: EpochStepDecay)",
            "default (x0.95 every 5 epochs)",
        )
        ours_drops = lr_drop_epochs_ours(budget.epochs)
        sslsv_drops = lr_drop_epochs_sslsv(budget.epochs)
        b.info(
            "LR drops before epoch (0-based)",
            ours_drops,
            sslsv_drops,
            same=ours_drops == sslsv_drops,
            note="our lr_annealing drops at other epochs",
        )
    b.sslsv_only(
        "trainer.mixed_precision", False, "mixed precision", "precision (below)"
    )
    b.fixed("precision", "fp32", "precision", "sslsv: autocast commented out")
    clip_note = "sslsv clips only DINO (per parameter, clip_grad)"
    b.fixed("max_grad_norm", math.inf, "global gradient clipping", clip_note)


def _map_encoder(b, encoder, method):
    if encoder == "ecapa":
        b.put("encoder.type", "ecapatdnn")
        b.same("channels", "encoder.channels", _INTS, "ECAPA channels")
    else:
        b.put("encoder.type", "resnet34")
        b.same("base_channels", "encoder.base_dim", _INT, "ResNet-34 base channels")
        if method in _FRAME_LEVEL:
            b.sslsv_only(
                "encoder.pooling",
                False,
                "ResNet-34 pooling",
                "none: frames (B, C, T/4) (cpc_resnet34.yaml)",
            )
        else:
            b.sslsv_only(
                "encoder.pooling_mode",
                "sap",
                "ResNet-34 pooling",
                "sap (encoders/resnet34.yaml)",
            )
    setting = "frame size" if method in _FRAME_LEVEL else "embedding size"
    b.same("emb_dim", "encoder.encoder_dim", _INT, setting)
    b.same("n_mels", "encoder.mel_n_mels", _INT, "mel bins")
    b.info(
        "features",
        "Fbank (SpeechBrain, 512-pt FFT, dB) + per-bin mean and variance norm",
        "MelSpectrogram (512-pt FFT) ln + InstanceNorm (per-bin mean and variance)",
        note="same normalisation; log base and top_db clip differ "
        "(docs/sslsv_comparison.md)",
    )


def _map_data(b, method, bank):
    ours = b.ours
    b.put("dataset.ssl", True)
    b.put("dataset.train", VIEW_TRAIN_LIST)
    b.put("dataset.label_key", "Speaker")
    b.info("train list", ours["train_list"], f"{VIEW_TRAIN_LIST} (same rows)")
    b.info("trial list", ours["trial_lists"][0], f"{VIEW_TRIAL_LIST} (same trials)")
    b.same("num_workers", "dataset.num_workers", _INT, "loader workers")
    b.put("dataset.pin_memory", False)
    if method != "dino":
        crop = b.same(
            "frame_length", "dataset.frame_length", _INT, "crop length (samples)"
        )
        # sslsv's SSLDataset wrap-pads every utterance shorter than
        # max(frame_length, ssl_dino_global_length, ssl_dino_local_length), i.e. to
        # 4 s by default even for two-crop methods; ours pads only below the crop.
        b.put("dataset.ssl_dino_local_length", crop)
        b.sslsv_only(
            "dataset.ssl_dino_global_length",
            crop,
            "wrap-pad utterances shorter than",
            f"{crop} (the crop)",
            note="sslsv's default pads to its DINO global length (4 s)",
        )
    aug_prob = b.same("aug_prob", "dataset.augmentation.aug_prob", _FLOAT, "aug_prob")
    b.put("dataset.augmentation.enable", aug_prob > 0)
    strategy = b.same(
        "strategy", "dataset.augmentation.strategy", _STR, "augmentation strategy"
    )
    if strategy not in ("reverb+noise", "reverb", "noise", "reverb|noise", "all"):
        raise SSLSVError(f"strategy: {strategy!r} is not an sslsv strategy")
    b.fixed("eq_prob", 0.0, "EQ augmentation", "sslsv has no EQ augmentation")
    snr = OUR_AUGMENT_CONSTANTS
    for ours_name, sslsv_name in (
        ("snr_noise", "musan_noise_snr"),
        ("snr_music", "musan_music_snr"),
        ("snr_speech", "musan_speech_snr"),
    ):
        _tuple_row(b, sslsv_name, snr[ours_name], f"{ours_name} (dB)", ours_name)
    for category in ("noise", "music"):
        _tuple_row(b, f"musan_{category}_num", [1, 1], f"{category} files per view")
    babble = list(snr["babble"])
    n_speech = (bank or {}).get("speech")
    sslsv_babble = babble
    if n_speech is not None and n_speech < babble[1]:
        # sslsv samples the speech files without replacement (random.sample).
        sslsv_babble = [min(babble[0], n_speech), n_speech]
    _tuple_row(
        b,
        "musan_speech_num",
        sslsv_babble,
        "babble speakers",
        "babble",
        ours_value=babble,
        note="" if sslsv_babble == babble else f"only {n_speech} speech files",
    )
    if bank is not None:
        b.info(
            "noise bank files (noise/music/speech)",
            f"{ours['noise_folder']}: "
            f"{bank.get('noise', 0)}/{bank.get('music', 0)}/{bank.get('speech', 0)}",
            "musan_split (links to the same files)",
            note="ours keeps <= 500 random files per category (ViewAugment)",
        )
        b.info(
            "RIR files",
            f"{ours['rir_folder']}: {bank.get('rir', 0)}",
            "simulated_rirs (links to the same files)",
            note="ours cuts RIRs at 1 s and aligns the direct path",
        )


def _tuple_row(b, name, value, setting, ours_name=None, ours_value=None, note=""):
    path = f"dataset.augmentation.{name}"
    b.fixups[path] = list(value)
    shown = list(value) if ours_value is None else list(ours_value)
    b.rows.append(
        Row(
            setting,
            f"blocks/augment.yaml {ours_name}" if ours_name else None,
            shown,
            path,
            list(value),
            same_value(shown, list(value)),
            note,
        )
    )


# ------------------------------------------------------------------------ methods
def _map_projector(b, path="method"):
    b.sslsv_only(f"{path}.enable_projector", True, "projector", "present")
    b.same("proj_hidden_dim", f"{path}.projector_hidden_dim", _INT)
    b.same("proj_out_dim", f"{path}.projector_output_dim", _INT)
    b.fixed("proj_n_hidden", 2, "projector hidden layers", "fixed in sslsv")


def _no_projector(b):
    b.sslsv_only(
        "method.enable_projector", False, "projector", "none (no projector in yaml)"
    )


def _map_momentum(b):
    b.same("start_tau", "method.start_tau", _FLOAT, "EMA momentum (start)")
    b.same("end_tau", "method.end_tau", _FLOAT, "EMA momentum (end)")
    b.same("tau_scheduler", "method.tau_scheduler", _BOOL, "EMA cosine schedule")


def _map_simclr(b, budget):
    b.same("temperature", "method.temperature", _FLOAT)
    _no_projector(b)


def _map_moco(b, budget):
    b.same("temperature", "method.temperature", _FLOAT)
    queue = b.same("queue_size", "method.queue_size", _INT)
    if queue % budget.batch_size:
        raise SSLSVError(
            f"queue_size {queue} is not a multiple of batch_size {budget.batch_size}"
            " (sslsv's MoCo asserts it when enqueuing keys)"
        )
    _map_momentum(b)
    b.same("prevent_class_collisions", "method.prevent_class_collisions", _BOOL)
    _no_projector(b)
    b.fixed(
        "shuffle_bn_splits",
        1,
        "shuffle-BN splits",
        "sslsv in one process: its batch shuffle leaves BatchNorm unchanged",
    )


def _map_dino(b, budget):
    b.put("dataset.frame_sampling", "dino")
    glob_len = b.same(
        "frame_length", "dataset.ssl_dino_global_length", _INT, "global crop"
    )
    b.put("dataset.frame_length", glob_len)
    local = b.same("local_length", "dataset.ssl_dino_local_length", _INT, "local crop")
    b.info(
        "local crop seen by the student",
        local,
        glob_len // 2,
        same=local == glob_len // 2,
        note="sslsv's DINO.forward cuts local crops to half the global length",
    )
    b.same("n_global", "dataset.ssl_dino_global_count", _INT, "global crops (data)")
    b.same("n_global", "method.global_count", _INT, "global crops (loss)")
    b.same("n_local", "dataset.ssl_dino_local_count", _INT, "local crops (data)")
    b.same("n_local", "method.local_count", _INT, "local crops (loss)")
    b.sslsv_only("method.enable_projector", True, "DINO head MLP", "present")
    b.same("head_hidden_dim", "method.head_hidden_dim", _INT)
    b.same("head_bottleneck_dim", "method.head_bottleneck_dim", _INT)
    b.same("head_out_dim", "method.head_output_dim", _INT)
    b.fixed("head_n_layers", 3, "head MLP layers", "fixed in sslsv")
    b.fixed("head_use_bn", True, "BatchNorm in the head", "fixed in sslsv")
    b.same("student_temp", "method.student_temperature", _FLOAT)
    b.same("teacher_temp", "method.teacher_temperature", _FLOAT)
    b.same("warmup_teacher_temp", "method.teacher_temperature_warmup", _FLOAT)
    b.same(
        "warmup_teacher_temp_epochs",
        "method.teacher_temperature_warmup_epochs",
        _INT,
    )
    b.fixed("center_momentum", 0.9, "centre momentum", "fixed in sslsv's DINOLoss")
    _map_momentum(b)
    b.same("freeze_last_layer", "method.freeze_last_layer", _INT)
    b.same("clip_grad", "method.clip_grad", _FLOAT, "per-parameter clipping")
    b.fixed(
        "no_weight_decay_bias_norm",
        True,
        "no weight decay on biases / norms",
        "fixed in sslsv's DINO",
    )


def _map_byol(b, budget):
    _map_momentum(b)
    b.same("proj_hidden_dim", "method.projector_hidden_dim", _INT)
    b.same("proj_out_dim", "method.projector_output_dim", _INT)
    b.fixed("proj_n_hidden", 2, "projector hidden layers", "fixed in sslsv")
    b.same("pred_hidden_dim", "method.predictor_hidden_dim", _INT)


def _map_simsiam(b, budget):
    b.same("proj_hidden_dim", "method.projector_hidden_dim", _INT)
    b.same("proj_out_dim", "method.projector_output_dim", _INT)
    b.fixed("proj_n_hidden", 2, "projector hidden layers", "fixed in sslsv")
    b.same("pred_hidden_dim", "method.pred_hidden_dim", _INT)
    b.fixed("predictor_fixed_lr", True, "predictor LR not scheduled", "fixed (fix_lr)")
    b.fixed("predictor_lr", None, "predictor LR (None: initial lr)", "initial lr")


def _map_vicreg(b, budget):
    b.same("inv_weight", "method.inv_weight", _FLOAT)
    b.same("var_weight", "method.var_weight", _FLOAT)
    b.same("cov_weight", "method.cov_weight", _FLOAT)
    _map_projector(b)


def _map_barlow_twins(b, budget):
    b.same("lambd", "method.lamda", _FLOAT, "off-diagonal weight")
    b.fixed("loss_scale", 0.025, "loss scale", "fixed in sslsv's BarlowTwinsLoss")
    _map_projector(b)


def _map_cpc(b, budget):
    b.fixed("temperature", 1.0, "InfoNCE temperature", "raw dot products (CPCLoss)")
    b.fixed("cpc_normalize", False, "cosine scores", "raw dot products (CPCLoss)")
    b.same("cpc_n_predict", "method.nb_t_to_predict", _INT, "future frames predicted")
    b.same("cpc_aggregator", "method.aggregator_type", _STR, "aggregator")
    b.same("cpc_layers", "method.aggregator_nb_layers", _INT, "aggregator layers")
    b.same("cpc_hidden", "method.aggregator_dim", _INT, "aggregator size (embedding)")
    b.same("cpc_bidirectional", "method.bidirectional", _BOOL, "bidirectional")
    b.fixed(
        "cpc_mode",
        "two_crop",
        "what is predicted",
        "the last frames of crop 2 from the final context of crop 1",
    )


def _map_swav(b, budget):
    b.same("temperature", "method.temperature", _FLOAT)
    b.same("n_prototypes", "method.nb_prototypes", _INT, "prototypes")
    b.same("sk_iters", "method.sk_nb_iters", _INT, "Sinkhorn iterations")
    b.same("sk_epsilon", "method.sk_epsilon", _FLOAT)
    b.same("queue_size", "method.queue_size", _INT)
    b.same("queue_start_epoch", "method.queue_start_epoch", _INT)
    b.same("freeze_prototypes_epochs", "method.freeze_prototypes_epochs", _INT)
    _map_projector(b)


_METHOD_MAPPERS = {
    "cpc": _map_cpc,
    "simclr": _map_simclr,
    "moco": _map_moco,
    "dino": _map_dino,
    "byol": _map_byol,
    "simsiam": _map_simsiam,
    "vicreg": _map_vicreg,
    "barlow_twins": _map_barlow_twins,
    "swav": _map_swav,
}


def format_value(value):
    """Value as written on our command line (YAML flow style, no spaces)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def our_cli_args(ours, extra, budget):
    """``--key=value`` arguments of our ``train.py`` for these settings.

    Every mapped setting is passed explicitly, plus the budget
    (``--number_of_epochs``, and ``--optimizer_step_limit`` for a partial epoch)
    and the unmapped ``extra`` overrides.

    Raises
    ------
    SSLSVError
        If a value contains ``=`` (SpeechBrain's parser would mangle it).
    """
    args = []
    for key, value in list(ours.items()) + list(extra.items()):
        text = format_value(value)
        if "=" in text:
            raise SSLSVError(
                f"setting {key}: the value {text!r} contains '=', which SpeechBrain's "
                "command-line parser mangles"
            )
        args.append(f"--{key}={text}")
    args.append(f"--number_of_epochs={budget.epochs}")
    if budget.step_limit is not None:
        args.append(f"--optimizer_step_limit={budget.step_limit}")
    return args


def extra_rows(extra):
    """Rows flagging overrides that exist on our side only."""
    return [
        Row(key, key, value, None, "(not mapped)", False, "passed to ours only")
        for key, value in extra.items()
    ]


def flatten(config, prefix=""):
    """``{dotted path: leaf value}`` of a nested dict (lists are leaves)."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_resolved(mapping, resolved):
    """Compare the config sslsv actually built with the one written.

    sslsv's loader (dacite) silently ignores unknown keys, so every written path
    (and every tuple fix-up) is looked up in ``resolved`` (the runner's plain dump
    of the loaded ``Config``).

    Arguments
    ---------
    mapping : SslsvMapping
    resolved : dict
        Nested plain dict (enums as their values, tuples as lists).

    Returns
    -------
    list of str
        One message per path that is missing or holds another value (empty: ok).
    """
    flat = flatten(resolved)
    wanted = flatten(mapping.config)
    wanted.update(mapping.fixups)
    problems = []
    for path, value in wanted.items():
        if path not in flat:
            problems.append(f"{path}: not a field of sslsv's config (ignored)")
        elif not same_value(flat[path], value):
            problems.append(f"{path}: wrote {value!r}, sslsv has {flat[path]!r}")
    return problems


def format_table(rows):
    """Plain-text settings table; differing rows are marked ``DIFFERS``.

    Arguments
    ---------
    rows : list of Row

    Returns
    -------
    str
    """

    def side(key, value):
        text = format_value(value) if not isinstance(value, str) else value
        return f"{key}={text}" if key else text

    cells = [
        (
            r.setting,
            side(r.ours_key, r.ours),
            side(r.sslsv_key, r.sslsv),
            ("" if r.same else "DIFFERS") + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    header = ("setting", "ours", "sslsv", "")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(3)]
    lines = []
    for c in [header, *cells]:
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3])
    lines.insert(1, "-" * (sum(widths) + 6))
    return "\n".join(line.rstrip() for line in lines)
