#!/usr/bin/env python3
"""Train a self-supervised speaker encoder, then score the trial lists.

One entry point for every method: the yaml names the Brain class (``brain_class``).

Single process (CPU or one GPU)::

    python recipes/VoxCeleb/SSL/train.py hparams/simclr_ecapa.yaml \
        --data_folder=/path/to/data

Several GPUs (DDP through SpeechBrain's run options)::

    torchrun --nproc_per_node=4 recipes/VoxCeleb/SSL/train.py hparams/dino_ecapa.yaml \
        --data_folder=/path/to/data

Without ``--data_folder`` the embedded synthetic corpus is used (generated on first
use). After training, every trial list named in the yaml is scored (cosine, EER and
minDCF) for the trained encoder and, for comparison, for the untrained one; results go
to ``<output_folder>/verification.json``.

Authors: the sslsv-sb developers.
"""

import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.data_pipeline import GeneratorDynamicItem
from speechbrain.utils.distributed import if_main_process

from sslsv_sb.data.lists import read_train_list, read_trials, resolve
from sslsv_sb.data.sampling import EpochState, ViewSampler
from sslsv_sb.errors import SSLSVError, run_cli
from sslsv_sb.evaluation.cache import model_fingerprint
from sslsv_sb.evaluation.verification import format_table, run_verification
from sslsv_sb.recipe.hparams import load_hparams as _load_hparams
from sslsv_sb.training import StepLogger

logger = logging.getLogger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))


def load_hparams(argv):
    """:func:`sslsv_sb.recipe.hparams.load_hparams`; yaml paths may be relative here."""
    return _load_hparams(argv, recipe_dir=HERE)


def resolve_num_workers(value, world=1):
    """``num_workers: auto`` -> loader workers that leave the model its cores.

    On a small CPU machine the model step uses every core and loader workers slow it
    down more than they save (``docs/benchmarks.md``: 2 cores, 0 workers is fastest);
    with spare cores (GPU training) up to 4 workers per process read and augment.
    """
    if value != "auto":
        try:
            return int(value)
        except (TypeError, ValueError) as err:
            raise SSLSVError(
                f"num_workers must be an integer or auto, got {value!r}"
            ) from err
    spare = (os.cpu_count() or 1) // max(1, world) - 2
    return max(0, min(4, spare))


def make_train_set(hparams, data_folder, epoch_state):
    """``DynamicItemDataset`` whose pipeline reads only the crops of each view."""
    list_path = resolve(hparams["train_list"], data_folder)
    df = read_train_list(list_path, data_folder, label_key=hparams.get("label_key"))
    data = {
        f"u{i}": {"path": p, "index": i, "line": int(line)}
        for i, (p, line) in enumerate(zip(df["path"], df["line"]))
    }
    if hparams.get("label_key"):
        classes = {c: i for i, c in enumerate(sorted(set(df["label"])))}
        for item, lab in zip(data.values(), df["label"]):
            item["label"] = classes[lab]
    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    partners = None
    if hparams.get("positive_pairs", "same_utterance") == "same_speaker":
        # Supervised positives: the second view comes from another utterance of the
        # same speaker (sslsv's "_sup" configs); needs a label column.
        if not hparams.get("label_key"):
            raise SSLSVError("positive_pairs: same_speaker needs label_key (Speaker)")
        groups = df.groupby("label").indices
        paths = df["path"].to_numpy()
        partners = [
            [paths[j] for j in groups[lab] if j != i]
            for i, lab in enumerate(df["label"])
        ]
    augment = None
    if hparams.get("augment_in_workers") and "augment" in hparams["modules"]:
        augment = hparams["modules"]["augment"]
    sampler = ViewSampler(
        hparams["view_groups"],
        seed=hparams["seed"],
        epoch_state=epoch_state,
        sample_rate=hparams["sample_rate"],
        partners=partners,
        augment=augment,
        augment_keys=[
            k for k in ("views", "local_views") if k in hparams["view_groups"]
        ],
    )
    dataset.add_dynamic_item(
        GeneratorDynamicItem(
            func=sampler.generate, takes=["path", "index"], provides=sampler.keys
        )
    )
    keys = ["id", "index", *sampler.keys]
    if hparams.get("label_key"):
        # Integer class ids in sorted label order (supervised baseline, monitoring).
        keys.append("label")
    dataset.set_output_keys(keys)
    batch = hparams["dataloader_options"]["batch_size"]
    if len(dataset) < batch and hparams["dataloader_options"].get("drop_last", True):
        raise SSLSVError(
            f"{list_path}: {len(dataset)} utterances, fewer than one batch of "
            f"{batch} (lower --batch_size)"
        )
    n_classes = hparams.get("n_classes")
    if hparams.get("label_key") and n_classes is not None:
        found = df["label"].nunique()
        if found > int(n_classes):
            raise SSLSVError(
                f"{list_path}: {found} classes in column '{hparams['label_key']}' but "
                f"n_classes is {n_classes} (set --n_classes={found})"
            )
    return dataset, df


def main(argv):
    """Train, then verify. Returns the verification results."""
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    data_folder = hparams["data_folder"]
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    epoch_state = EpochState()
    # The yaml's batch_size is the global batch: each DDP rank loads its share.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    loader_kwargs = dict(hparams["dataloader_options"])
    loader_kwargs["num_workers"] = resolve_num_workers(
        loader_kwargs.get("num_workers", 0), world
    )
    if world > 1:
        if loader_kwargs["batch_size"] % world:
            raise SSLSVError(
                f"batch_size {loader_kwargs['batch_size']} is not divisible by the "
                f"{world} processes"
            )
        loader_kwargs["batch_size"] //= world
    if "augment" in hparams["modules"]:
        hparams["modules"]["augment"].load(data_folder, seed=hparams["seed"])
    train_set, _ = make_train_set(hparams, data_folder, epoch_state)
    if hparams.get("valid_trial_list"):
        hparams["valid_trial_list_path"] = resolve(
            hparams["valid_trial_list"], data_folder
        )
        read_trials(hparams["valid_trial_list_path"], data_folder)  # fail early
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

    brain_class = hparams["brain_class"]
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        epoch_state=epoch_state,
    )
    trial_files = [resolve(t, data_folder) for t in hparams.get("trial_lists", [])]
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
            data_folder,
            out,
            model_id=model_fingerprint(brain.inference_modules()),
            tag="untrained",
        )

    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        train_loader_kwargs=loader_kwargs,
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
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Tear the process group down explicitly: left to interpreter shutdown, gloo's
        # threads can abort the process ("terminate called without an active
        # exception", SIGABRT) after a successful run.
        torch.distributed.destroy_process_group()
    return results


def select_final_model(brain, hparams):
    """Best-validation checkpoint, or the average of the last K checkpoints.

    ``valid_trial_list`` set: recover the checkpoint with the lowest validation EER.
    ``average_last_k`` > 1: average the inference encoder over the K most recent
    checkpoints (sslsv reports averaged models); needs ``keep_checkpoints >= K``.
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
        model.load_state_dict(average_checkpoints(ckpts, name))
        logger.info("averaged %s over %d checkpoints", name, len(ckpts))


def run_meta(brain, hparams):
    """Plain-type description of the run for verification.json."""
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


if __name__ == "__main__":
    run_cli(main)
