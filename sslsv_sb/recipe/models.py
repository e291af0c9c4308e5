"""Model selection and loading of trained runs.

- :func:`select_final_model`: the model a training run scores (best validation EER,
  or the average of the last K checkpoints), applied by ``train.py`` after training
  and by every script that loads a run with ``--checkpoint=auto``;
- :func:`build_run_brain` and :func:`load_trained`: a run's Brain (from its yaml)
  and its trained weights, for ``evaluate.py``, ``downstream.py`` and
  ``pseudo_labels.py``;
- :func:`load_run_hparams` and :func:`extract_encoder`: a run folder's saved
  ``hyperparams.yaml`` and its scored encoder as a state dict, for the export tool,
  the label-efficient and the language recipes;
- :func:`run_meta`: the plain-type description of a run in ``verification.json``.
"""

import functools
import json
import logging
import os

import torch
from hyperpyyaml import load_hyperpyyaml

from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import build_brain, find_checkpoints, load_model
from sslsv_sb.training import first_nonfinite, state_tensors

logger = logging.getLogger(__name__)

# Recorded in the run meta when --checkpoint=auto applied select_final_model.
AUTO_SELECTION = "train.py select_final_model"


def check_finite_model(brain, what):
    """Refuse a non-finite inference model (NaN / Inf weight or buffer).

    Training never saves a non-finite state, but averaging can overflow and a
    checkpoint may come from elsewhere; scoring, exporting or extracting it would
    fail later with a less clear error, or write a useless file.

    Arguments
    ---------
    brain : SSLBrain
        Its :meth:`inference_modules` are checked.
    what : str
        The model, for the message (e.g. ``"the averaged model"``).
    """
    names = {}
    if brain.checkpointer is not None:
        names = {id(obj): n for n, obj in brain.checkpointer.recoverables.items()}
    mods = [(names.get(id(m), type(m).__name__), m) for m in brain.inference_modules()]
    bad = first_nonfinite(state_tensors(mods))
    if bad is not None:
        raise SSLSVError(
            f"{what} is not finite: {bad} holds NaN or Inf (not scored or saved)"
        )


def select_final_model(brain, hparams):
    """Best-validation checkpoint, or the average of the last K checkpoints.

    ``valid_trial_list`` set: recover the checkpoint with the lowest validation EER.
    ``average_last_k`` > 1: average the inference encoder over the K most recent
    checkpoints (sslsv reports averaged models); needs ``keep_checkpoints >= K``.
    The selected model must be finite (:func:`check_finite_model`).

    Arguments
    ---------
    brain : SSLBrain
        A Brain with its checkpointer; its inference encoder is changed in place.
    hparams : dict
        Loaded hyper-parameters (``valid_trial_list``, ``average_last_k``).
    """
    ckpt = brain.checkpointer
    if hparams.get("valid_trial_list") and ckpt.find_checkpoints(min_key="valid_eer"):
        ckpt.recover_if_possible(min_key="valid_eer")
    k = int(hparams.get("average_last_k") or 1)
    if k > 1:
        from speechbrain.utils.checkpoints import average_checkpoints

        model = brain.inference_modules()[2]
        name = next((n for n, obj in ckpt.recoverables.items() if obj is model), None)
        ckpts = ckpt.find_checkpoints(
            importance_key=lambda c: c.meta.get("unixtime", 0), max_num_checkpoints=k
        )
        if name is None or len(ckpts) < 2:
            logger.warning("average_last_k=%d: nothing to average", k)
            return
        loader = functools.partial(torch.load, weights_only=True)
        state = average_checkpoints(ckpts, name, parameter_loader=loader)
        model.load_state_dict(state)
        logger.info("averaged %s over %d checkpoints", name, len(ckpts))
        check_finite_model(brain, f"the average of the last {len(ckpts)} checkpoints")
        return
    check_finite_model(brain, "the final model")


def run_meta(brain, hparams):
    """Plain-type description of the run for ``verification.json``.

    Arguments
    ---------
    brain : SSLBrain
    hparams : dict

    Returns
    -------
    dict
        Method, encoder class and size, epochs, data folder, train list, torch
        version.
    """
    model = brain.inference_modules()[2]
    return {
        "method": brain.method_name,
        "encoder": type(model).__name__,
        "n_params_encoder": int(sum(p.numel() for p in model.parameters())),
        "epochs": int(brain.hparams.epoch_counter.current),
        "data_folder": hparams["data_folder"],
        "train_list": hparams["train_list"],
        "torch": torch.__version__,
    }


def build_run_brain(
    hparams, run_opts, checkpoint="auto", best_key="train_loss", best_mode="min"
):
    """The Brain of a trained run, checked to have the requested checkpoint.

    Fails before any work (embedding, clustering) when ``--output_folder`` is not a
    trained run. The weights are loaded later by :func:`load_trained`, so the
    untrained (seeded) model can be scored first.

    Arguments
    ---------
    hparams : dict
        The run's hyper-parameters (``output_folder`` is the run folder).
    run_opts : dict or RunOptions
        SpeechBrain run options (device, precision...).
    checkpoint : str
        ``auto``, ``last``, ``best`` or a ``CKPT+...`` folder (see
        :func:`sslsv_sb.export.find_checkpoints`).
    best_key, best_mode : str
        Ranking for ``checkpoint="best"``.

    Returns
    -------
    SSLBrain
    """
    brain = build_brain(hparams, run_opts)
    if brain.checkpointer is None or not os.path.isdir(
        brain.checkpointer.checkpoints_dir
    ):
        folder = getattr(brain.checkpointer, "checkpoints_dir", "<no checkpointer>")
        raise SSLSVError(
            f"{folder}: no checkpoint folder (--output_folder must be a trained run)"
        )
    which = "last" if checkpoint == "auto" else str(checkpoint)
    find_checkpoints(brain.checkpointer, which, best_key, best_mode)
    return brain


def load_trained(brain, hparams, checkpoint="auto", average_last=1, **kwargs):
    """Load a run's trained weights into ``brain``.

    ``checkpoint="auto"`` gives the model ``train.py`` scored: the last checkpoint,
    then :func:`select_final_model` (best validation / averaged checkpoints) when the
    yaml asks for it. Other values are explicit (see
    :func:`sslsv_sb.export.load_model`).

    Arguments
    ---------
    brain : SSLBrain
        Built from the run's yaml, with its checkpointer.
    hparams : dict
        The run's hyper-parameters.
    checkpoint : str
        ``auto``, ``last``, ``best`` or a checkpoint folder.
    average_last : int
        Average the weights of the first K checkpoints of that order (not with
        ``auto``, which follows the yaml's ``average_last_k``).
    **kwargs
        ``best_key``, ``best_mode`` for ``checkpoint="best"``.

    Returns
    -------
    dict
        Checkpoint provenance for the run meta (``checkpoints``, ``epoch`` and, with
        ``auto``, ``selection``).
    """
    if checkpoint == "auto":
        info = load_model(brain, "last", 1)
        select_final_model(brain, hparams)
        info["selection"] = AUTO_SELECTION
        return info
    info = load_model(brain, str(checkpoint), int(average_last), **kwargs)
    check_finite_model(brain, f"the model of {', '.join(info['checkpoints'])}")
    return info


def load_run_hparams(run_folder, overrides=None, flag=None):
    """Load the ``hyperparams.yaml`` a training run saved in its folder.

    Arguments
    ---------
    run_folder : str
        Training output folder.
    overrides : dict or None
        HyperPyYAML overrides (e.g. ``{"output_folder": run_folder}`` for a run that
        was moved).
    flag : str or None
        Command-line flag that named the folder, quoted in the error message.

    Returns
    -------
    (str, dict)
        The yaml path and the loaded hyper-parameters.
    """
    run = os.path.abspath(run_folder)
    yaml_path = os.path.join(run, "hyperparams.yaml")
    if not os.path.isfile(yaml_path):
        prefix = f"{flag}: " if flag else ""
        raise SSLSVError(
            f"{prefix}{yaml_path}: not found ({run} is not a training run folder)"
        )
    with open(yaml_path, encoding="utf-8") as fin:
        return yaml_path, load_hyperpyyaml(fin, overrides)


def extract_encoder(run_folder, dest, flag=None):
    """Save the scored encoder of a trained run as a state dict file.

    The encoder is the one the method evaluates with
    (``brain.inference_modules()[2]``: the DINO teacher, ...), with the weights
    ``--checkpoint=auto`` selects. ``dest.json`` records the provenance.

    Arguments
    ---------
    run_folder : str
        Run folder with ``hyperparams.yaml`` and ``save/CKPT+*``.
    dest : str
        Output ``.ckpt`` path (``torch.save`` of the ``embedding_model`` state dict,
        written atomically).
    flag : str or None
        Command-line flag that named the run, quoted in error messages.

    Returns
    -------
    str
        ``dest``.
    """
    run = os.path.abspath(run_folder)
    _, hparams = load_run_hparams(run, {"output_folder": run}, flag)
    brain = build_brain(hparams, {"device": "cpu"})
    info = load_trained(brain, hparams, "auto")
    state = brain.inference_modules()[2].state_dict()
    tmp = f"{dest}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, dest)
    with open(f"{dest}.json", "w", encoding="utf-8") as f:
        json.dump({"ssl_run": run, **info}, f, indent=2)
    return dest
