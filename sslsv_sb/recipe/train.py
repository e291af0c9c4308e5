"""The training flow of ``recipes/VoxCeleb/SSL/train.py``: train, select, verify.

:func:`main` claims the output folder (lock, :mod:`sslsv_sb.recipe.runfolder`)
before the yaml builds anything, loads the yaml
(:func:`sslsv_sb.recipe.hparams.load_hparams`), checks the inputs, then starts the
run (a new run writes ``hyperparams.yaml`` once; a resume is checked against it),
builds the train set (:func:`sslsv_sb.recipe.trainset.build_train_set`) and the
yaml's Brain class (:func:`build_train_brain`), scores the untrained encoder once,
trains (SIGTERM / SIGINT stop at a step boundary with a checkpoint), applies
:func:`sslsv_sb.recipe.models.select_final_model` and scores every trial list of
the yaml into ``<output_folder>/verification.json``.
"""

import gc
import logging
import os
import sys

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from sslsv_sb.data.lists import read_trials, resolve
from sslsv_sb.evaluation.cache import model_fingerprint
from sslsv_sb.evaluation.verification import format_table, run_verification
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import run_meta, select_final_model
from sslsv_sb.recipe.paths import VOXCELEB_SSL
from sslsv_sb.recipe.runfolder import (
    GracefulStop,
    StopRequested,
    TrainingRunFolder,
    ignore_stop_signals_in_workers,
)
from sslsv_sb.recipe.trainset import build_train_set
from sslsv_sb.recipe.validate import validate_run
from sslsv_sb.training import StepLogger

logger = logging.getLogger(__name__)


def build_train_brain(hparams, run_opts, epoch_state, checkpointer=True):
    """The yaml's ``brain_class`` set up for training.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters (``brain_class``, ``modules``, ``opt_class``,
        ``checkpointer``).
    run_opts : dict or RunOptions
        SpeechBrain run options.
    epoch_state : EpochState
        The train set's epoch state (:class:`~sslsv_sb.recipe.trainset.TrainSet`).
    checkpointer : bool
        Pass the yaml's checkpointer (``False``: no checkpoints, e.g. benchmarks).

    Returns
    -------
    SSLBrain
    """
    return hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"] if checkpointer else None,
        epoch_state=epoch_state,
    )


def _check_valid_list(hparams, data_folder):
    """Resolve ``valid_trial_list`` and read it once (bad lines fail early)."""
    if hparams.get("valid_trial_list"):
        hparams["valid_trial_list_path"] = resolve(
            hparams["valid_trial_list"], data_folder
        )
        read_trials(hparams["valid_trial_list_path"], data_folder)


def _step_logger(hparams):
    """TensorBoard / W&B step logger when the yaml asks for one."""
    if hparams.get("tensorboard") or hparams.get("wandb"):
        hparams["step_logger"] = StepLogger(
            hparams["output_folder"],
            tensorboard=bool(hparams.get("tensorboard")),
            wandb=bool(hparams.get("wandb")),
            wandb_mode=hparams.get("wandb_mode", "offline"),
            config={
                k: v for k, v in hparams.items() if isinstance(v, int | float | str)
            },
        )


def _score_untrained(brain, hparams, trial_files):
    """Score the seeded initialisation once, before the first checkpoint."""
    out = hparams["output_folder"]
    untrained_path = os.path.join(out, "verification_untrained.json")
    if (
        trial_files
        and hparams.get("eval_untrained", True)
        and if_main_process()
        and not os.path.isfile(untrained_path)
        and not brain.checkpointer.find_checkpoints()
    ):
        run_verification(
            brain.encode,
            hparams,
            hparams["data_folder"],
            out,
            model_id=model_fingerprint(brain.inference_modules()),
            tag="untrained",
        )


def main(argv):
    """Train, then verify.

    Arguments
    ---------
    argv : list of str
        ``[hparams file, --key=value, ...]`` (yaml overrides and SpeechBrain run
        options); a relative yaml path may be relative to ``recipes/VoxCeleb/SSL``.

    Returns
    -------
    dict, int or None
        ``{list: {backend: metrics}}`` of the trained encoder (main process),
        ``None`` without trial lists, or the exit status 143 / 130 after a SIGTERM /
        SIGINT (``stopped by SIGTERM: re-run the same command to resume`` on stderr).
    """
    run = TrainingRunFolder()
    stop = GracefulStop()
    try:
        with stop.installed():
            return _train(argv, run, stop)
    except StopRequested as err:
        stop.stop_loader_workers()
        if if_main_process():
            print(err.message(), file=sys.stderr)
        return err.exit_code
    finally:
        run.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Tear the process group down explicitly: left to interpreter shutdown,
            # gloo's threads can abort the process ("terminate called without an
            # active exception", SIGABRT) after a successful run.
            gc.collect()  # DDP reducers in reference cycles go first
            torch.distributed.destroy_process_group()


def _train(argv, run, stop):
    """:func:`main` inside the lock and the signal handlers."""
    hparams_file, run_opts, overrides, hparams = load_hparams(
        argv, recipe_dir=str(VOXCELEB_SSL), before_load=run.claim
    )
    run.check(hparams_file, overrides, hparams)  # a resume must continue the run
    validate_run(hparams)  # every input, on every rank, before anything is written
    data_folder = hparams["data_folder"]
    train_set = build_train_set(hparams)
    _check_valid_list(hparams, data_folder)
    run.start(hparams_file, overrides, hparams)
    _step_logger(hparams)
    brain = build_train_brain(hparams, run_opts, train_set.epoch_state)
    trial_files = [resolve(t, data_folder) for t in hparams.get("trial_lists", [])]
    out = hparams["output_folder"]
    _score_untrained(brain, hparams, trial_files)

    stop.attach(brain)
    ignore_stop_signals_in_workers(train_set.loader_kwargs)
    with stop.deferred():
        brain.fit(
            brain.hparams.epoch_counter,
            train_set.dataset,
            train_loader_kwargs=train_set.loader_kwargs,
            progressbar=not run_opts.get("noprogressbar", False),
        )

    select_final_model(brain, hparams)
    results = None
    if trial_files and if_main_process():
        payload = run_verification(
            brain.encode,
            hparams,
            data_folder,
            out,
            model_id=model_fingerprint(brain.inference_modules()),
            meta=run_meta(brain, hparams),
        )
        results = payload["lists"]
        print(format_table(results, payload.get("untrained", {}).get("lists")))
        print(f"results written to {os.path.join(out, 'verification.json')}")
    sb.utils.distributed.ddp_barrier()
    return results
