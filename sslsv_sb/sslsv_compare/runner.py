"""Train and embed with sslsv's own code, inside sslsv's virtual environment.

This file is executed by sslsv's Python (``PYTHONPATH`` = the sslsv folder, working
directory = the comparison's sslsv work folder). It imports only the standard
library, numpy, torch and sslsv: never ``sslsv_sb``, whose dependencies the sslsv
environment does not have. It follows sslsv's ``sslsv/bin/train.py`` step by step
(``load_config`` seeds the RNGs, then the train loader, the model, ``MethodWrapper``
and ``Trainer.start``) and adds, without editing any sslsv file:

- run-time stand-ins for two things that stop sslsv on a current stack
  (:func:`install_stand_ins`, :func:`patch_wandb`);
- the tuple-typed config fields that sslsv's yaml loader cannot read
  (``--fixups``, :func:`apply_fixups`);
- an optimiser-step limit for budgets that end inside an epoch
  (:class:`StepLimitedLoader`: schedules still span the whole epochs), which also
  records every step's time (``step_seconds`` in ``runner.json``; ``--time-only``
  stops after training, for ``tools/benchmark.py --sslsv``);
- the embeddings of every file of the trial list, for the untrained (seeded
  initialisation, before the first step) and the trained model, extracted by
  sslsv's own ``CosineSVEvaluation`` with ``frame_length: null`` (full
  utterances, one at a time, L2-normalised, no mean-centring: its test protocol),
  together with the EER / minDCF that sslsv's code computes from them.

Outputs in ``--out``: ``runner.json`` (resolved config, steps, times, sslsv's own
metrics, per-epoch training metrics), ``embeddings_untrained.npz`` and
``embeddings_trained.npz`` (``ids``: trial-list paths, ``emb``: ``(U, D)``).

Usage (normally through ``tools/compare_sslsv.py``)::

    PYTHONPATH=/path/to/sslsv python runner.py --config models/x/config.yml \\
        --fixups fixups.json --trials sslsv_trials.txt --out results --threads 2
"""

import argparse
import dataclasses
import enum
import importlib.util
import json
import os
import pathlib
import sys
import time
import types

#: Modules replaced by stand-ins when they are not importable. ``s3prl`` is always
#: replaced: sslsv imports its S3PRL encoder module unconditionally and the real
#: package does not import with current torchaudio. ``speechbrain`` is only needed
#: by sslsv's PLDA evaluation, which the comparison does not use.
S3PRL_MODULES = ("s3prl", "s3prl.nn", "s3prl.util", "s3prl.util.download")
SPEECHBRAIN_MODULES = (
    "speechbrain",
    "speechbrain.processing",
    "speechbrain.processing.PLDA_LDA",
)


class StandInError(RuntimeError):
    """Raised when code uses a module that the runner replaced by a stand-in."""


def _unavailable(qualname):
    """A callable / class stand-in that fails clearly when used."""

    def fail(*args, **kwargs):
        raise StandInError(
            f"{qualname} is a stand-in of the comparison runner: the S3PRL encoders "
            "and sslsv's PLDA evaluation are not available in this environment"
        )

    return type(qualname.rsplit(".", 1)[-1], (), {"__init__": fail, "__call__": fail})


def install_stand_ins(modules=None, speechbrain_available=None):
    """Put stand-in ``s3prl`` (and, if missing, ``speechbrain``) modules in place.

    Arguments
    ---------
    modules : dict or None
        The module table to fill (default: ``sys.modules``).
    speechbrain_available : bool or None
        Whether the real SpeechBrain imports (default: looked up).

    Returns
    -------
    list of str
        Names of the modules that were replaced.
    """
    modules = sys.modules if modules is None else modules
    if speechbrain_available is None:
        speechbrain_available = importlib.util.find_spec("speechbrain") is not None
    names = list(S3PRL_MODULES)
    if not speechbrain_available:
        names += list(SPEECHBRAIN_MODULES)
    for name in names:
        modules[name] = types.ModuleType(name, f"stand-in ({__file__})")
    for name in names:  # parents expose their children, as after a real import
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, modules[name])
    modules["s3prl.nn"].S3PRLUpstream = _unavailable("s3prl.nn.S3PRLUpstream")
    modules["s3prl.nn"].Featurizer = _unavailable("s3prl.nn.Featurizer")
    modules["s3prl.util.download"].set_dir = _unavailable("s3prl.util.download.set_dir")
    if not speechbrain_available:
        plda = modules["speechbrain.processing.PLDA_LDA"]
        for name in ("PLDA", "StatObject_SB", "Ndx", "fast_PLDA_scoring"):
            setattr(plda, name, _unavailable(f"speechbrain.processing.PLDA_LDA.{name}"))
    return names


class _RunWithUrl:
    """A W&B run proxy that answers ``get_url()`` (a disabled run has none)."""

    def __init__(self, run):
        self._run = run

    def get_url(self):
        getter = getattr(self._run, "get_url", None)
        return getter() if callable(getter) else None

    def __getattr__(self, name):
        return getattr(self._run, name)


def patch_wandb(wandb_module):
    """Wrap ``wandb.init`` so the returned run answers ``get_url()``.

    sslsv's ``Trainer._init_wandb`` always runs W&B disabled and calls
    ``get_url()`` on the result; current wandb's disabled run has no such method.

    Arguments
    ---------
    wandb_module : module
        The imported ``wandb`` (patched in place; patching twice is harmless).
    """
    original = wandb_module.init
    if getattr(original, "_sslsv_compare", False):
        return

    def init(*args, **kwargs):
        return _RunWithUrl(original(*args, **kwargs))

    init._sslsv_compare = True
    wandb_module.init = init


def apply_fixups(config, fixups):
    """Set dotted-path config fields, converting lists to the field's type.

    sslsv's loader (dacite) refuses a YAML list for a ``Tuple`` field, so tuple
    fields (MUSAN SNR ranges, noise counts) are set here after loading.

    Arguments
    ---------
    config : object
        The loaded sslsv ``Config``.
    fixups : dict
        ``{"dataset.augmentation.musan_speech_num": [3, 7], ...}``.

    Raises
    ------
    KeyError
        For a path that does not exist in the config.
    """
    for path, value in fixups.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = getattr(node, part)
        if node is None or not hasattr(node, leaf):
            raise KeyError(f"sslsv config has no field {path}")
        current = getattr(node, leaf)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(node, leaf, value)


def plain(obj):
    """JSON-able copy of a config object (enums -> values, paths -> str).

    Dataclasses become dicts of their fields; sslsv's ``__type__`` attribute of the
    encoder / method configs becomes the ``type`` key, as in ``config.yml``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if getattr(obj, "__type__", None) is not None and "type" not in out:
            out["type"] = obj.__type__
        return out
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


class StepLimitedLoader:
    """A train loader that stops after ``limit`` batches in total (all epochs).

    ``len()`` stays the full epoch length, so sslsv's step counter
    (``epoch * len + step_rel``) and its schedules (``nb_steps = epochs * len``)
    are those of the whole epochs, as with SpeechBrain's ``optimizer_step_limit``
    on our side. Other attributes (``dataset``, ``sampler``) are the loader's.

    Arguments
    ---------
    loader : iterable with ``len``
    limit : int or None
        Batches to yield in total (None: no limit).
    """

    def __init__(self, loader, limit=None):
        self.loader = loader
        self.limit = limit
        self.yielded = 0
        # perf_counter() when an epoch's iteration starts and when each step ends
        # (the trainer asks for the next batch): step i lasted marks[i+1] - marks[i]
        # of its epoch, data loading included (tools/benchmark.py --sslsv).
        self.step_marks = []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        marks = [time.perf_counter()]
        self.step_marks.append(marks)
        for batch in self.loader:
            if self.limit is not None and self.yielded >= self.limit:
                return
            self.yielded += 1
            yield batch
            marks.append(time.perf_counter())

    def step_seconds(self):
        """Seconds of every finished step, in order (loading included)."""
        return [b - a for marks in self.step_marks for a, b in zip(marks, marks[1:])]

    def __getattr__(self, name):
        if name == "loader":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)


def restore_initial(method, initial):
    """Load the initial state back into ``method`` (after the trained evaluation).

    Only buffers registered during training (e.g. SwAV's queue, created in
    ``on_train_start``) may be missing from ``initial``; they do not take part in
    embedding extraction.

    Raises
    ------
    RuntimeError
        If a parameter or a buffer of the encoders is missing, or a key is unknown.
    """
    missing, unexpected = method.load_state_dict(initial, strict=False)
    params = {name for name, _ in method.named_parameters()}
    bad = [k for k in missing if k in params or k.startswith("encoder")]
    if bad or unexpected:
        raise RuntimeError(
            f"cannot restore the initial state: missing {bad}, unexpected {unexpected}"
        )


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config.yml (relative)")
    parser.add_argument("--fixups", help="JSON {dotted path: value} for tuple fields")
    parser.add_argument("--trials", help="trial list, relative to the data folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--max-steps", type=int, default=None, help="step limit")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="load the config, build the model, write runner.json and stop",
    )
    parser.add_argument(
        "--time-only",
        action="store_true",
        help="train and record per-step times, skip the embeddings (benchmark)",
    )
    parser.add_argument(
        "--keep-epoch-checkpoints",
        action="store_true",
        help="keep sslsv's model_epoch-N.pt files (default: only model_latest.pt)",
    )
    return parser.parse_args(argv)


def _embed_and_score(model, config, trials, device):
    """sslsv's own sv_cosine evaluation of ``model`` on ``trials`` (full utterances).

    Returns ``(ids, embeddings (U, D) float32 array, {"eer": %, "mindcf": ..})``.
    """
    import numpy as np
    import torch
    from sslsv.evaluations.CosineSVEvaluation import (
        CosineSVEvaluation,
        CosineSVEvaluationTaskConfig,
    )

    task = CosineSVEvaluationTaskConfig(frame_length=None, trials=[trials])
    task.__type__ = "sv_cosine"
    model.eval()
    evaluation = CosineSVEvaluation(model, config, task, device, False, False)
    metrics = evaluation.evaluate()
    merged = {**evaluation.enrol_embeddings, **evaluation.test_embeddings}
    ids = sorted(merged)
    emb = torch.stack([merged[i].reshape(-1, merged[i].shape[-1])[0] for i in ids])
    own = {
        "eer": float(metrics[f"{trials}/eer"]),
        "mindcf_0.01": float(metrics[f"{trials}/mindcf"]),
    }
    return ids, emb.float().cpu().numpy().astype(np.float32), own


def main(argv=None):
    """Run sslsv (see the module docstring); returns the ``runner.json`` payload."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["WANDB_SILENT"] = "true"
    replaced = install_stand_ins()

    import numpy as np
    import torch
    import wandb

    patch_wandb(wandb)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sslsv.bin.train import MethodWrapper
    from sslsv.trainer.Trainer import Trainer
    from sslsv.utils.helpers import (
        evaluate,
        load_config,
        load_model,
        load_train_dataloader,
    )

    class TimedTrainer(Trainer):
        """sslsv's Trainer, timing its step loops and keeping fewer checkpoints."""

        train_seconds = 0.0

        def _train_step_loop(self, logger):
            start = time.perf_counter()
            super()._train_step_loop(logger)
            self.train_seconds += time.perf_counter() - start

        def _save_checkpoint(self, suffix):
            if suffix.startswith("epoch-") and not args.keep_epoch_checkpoints:
                return
            super()._save_checkpoint(suffix)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fixups = {}
    if args.fixups:
        with open(args.fixups, encoding="utf-8") as f:
            fixups = json.load(f)

    # --- sslsv/bin/train.py, in the same order (same RNG draws)
    config = load_config(args.config, verbose=not args.dry_run)
    apply_fixups(config, fixups)
    loader = load_train_dataloader(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(config).to(device)
    if device.type == "cuda":
        model = torch.nn.DataParallel(model)
    else:
        model = MethodWrapper(model)
    payload = {
        "resolved_config": plain(config),
        "stand_ins": replaced,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "device": str(device),
        "n_train": len(loader.dataset),
        "steps_per_epoch": len(loader),
        "epochs": config.trainer.epochs,
        "n_params_encoder": sum(p.numel() for p in model.module.encoder.parameters()),
        "n_params_trainable": sum(
            p.numel() for p in model.parameters() if p.requires_grad
        ),
    }
    if args.dry_run:
        _write_json(out / "runner.json", payload)
        return payload

    # The seeded initialisation, before any step (a state copy: modules with
    # weight_norm, e.g. DINO's head and SwAV's prototypes, cannot be deep-copied).
    initial = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    limited = StepLimitedLoader(loader, args.max_steps)
    trainer = TimedTrainer(
        model=model,
        train_dataloader=limited,
        config=config,
        evaluate=evaluate,
        device=device,
    )
    start = time.perf_counter()
    trainer.start()
    payload["wall_seconds_train"] = time.perf_counter() - start
    payload["train_seconds"] = trainer.train_seconds
    payload["steps"] = limited.yielded
    payload["s_per_step"] = trainer.train_seconds / max(1, limited.yielded)
    payload["step_seconds"] = limited.step_seconds()
    history = config.model_path / "training.json"
    if history.is_file():
        with open(history, encoding="utf-8") as f:
            payload["epochs_log"] = json.load(f)

    payload["own_metrics"] = {}
    if args.time_only:
        _write_json(out / "runner.json", payload)
        return payload
    for tag in ("trained", "untrained"):
        if tag == "untrained":
            restore_initial(model.module, initial)
        start = time.perf_counter()
        ids, emb, own = _embed_and_score(model, config, args.trials, device)
        np.savez(out / f"embeddings_{tag}.npz", ids=np.asarray(ids), emb=emb)
        own["seconds"] = time.perf_counter() - start
        payload["own_metrics"][tag] = own
    _write_json(out / "runner.json", payload)
    return payload


def _write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
