"""``SSLBrain``: the shared SpeechBrain ``Brain`` under every method.

Data flow of one training step (``docs/architecture.md``)::

    batch.views (B, V, L) -> view-major (V*B, L) -> augmentation (per row, on device)
      -> compute_features (Fbank) -> mean_var_norm (per utterance) -> embedding_model
      -> method head(s) -> loss

A method subclass implements ``compute_forward`` / ``compute_objectives`` (and, when it
needs them, ``init_optimizers`` for parameter groups and ``inference_modules`` for a
teacher at inference). Everything shared lives here: views, features, augmentation,
embedding extraction, per-epoch logging, checkpointing, non-finite loss handling and a
CPU-safe DDP wrapper.
"""

import abc
import glob
import logging
import math
import os
import time
from collections import defaultdict

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from sslsv_sb.distributed import convert_sync_batchnorm_cpu, rank
from sslsv_sb.errors import SSLSVError
from sslsv_sb.training import RNGState

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "COMPLETE"


def _is_fixed_lr(group):
    """True for optimiser groups whose LR no schedule may change (``fixed_lr``)."""
    value = group.get("fixed_lr")
    return value is not None and value is not False


def unwrap(module):
    """The module inside a DDP/DP wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") else module


class SSLBrain(sb.Brain, abc.ABC):
    """Base Brain for self-supervised (and supervised baseline) speaker encoders.

    Expected ``modules`` (yaml): ``compute_features``, ``mean_var_norm``,
    ``embedding_model``, optionally ``augment`` (a
    :class:`~sslsv_sb.data.augment.ViewAugment`) and the method's heads and losses.

    Expected ``hparams``: ``epoch_counter``, optionally ``train_logger``,
    ``lr_annealing`` (``f(epoch) -> (old_lr, new_lr)``), ``skip_nonfinite_steps``
    (bool, default False: a non-finite loss stops the run), ``keep_checkpoints``.
    """

    method_name = "ssl"

    def __init__(self, *args, epoch_state=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_state = epoch_state
        self.last_finite_loss = None
        self.skipped_steps = 0
        self._skip_this_step = False
        self._metric_sums = defaultdict(float)
        self._metric_count_per = defaultdict(int)
        self.valid_history = []  # (epoch, EER %) of the validation trial list
        self.rng_state = RNGState()
        if (
            self.checkpointer is not None
            and "rng" not in self.checkpointer.recoverables
        ):
            self.checkpointer.add_recoverable("rng", self.rng_state)
        if self.checkpointer is not None:
            self._make_checkpoints_atomic()
        self.step_logger = getattr(self.hparams, "step_logger", None)

    # ------------------------------------------------------------------ views
    def get_views(self, batch, key="views"):
        """``(B, V, L)`` tensor of the views stored under ``key``, on the device."""
        views = getattr(batch, key).data.to(self.device)
        if views.dim() != 3:
            raise ValueError(f"batch.{key} must be (B, V, L), got {tuple(views.shape)}")
        return views

    def augment(self, wavs, stage):
        """Per-row augmentation (training only), outside autocast: (N, L) -> (N, L)."""
        if stage != sb.Stage.TRAIN or "augment" not in self.modules:
            return wavs
        if getattr(self.hparams, "augment_in_workers", False):
            return wavs  # already augmented by the data pipeline
        with torch.autocast(device_type=self.device_type, enabled=False):
            return self.modules.augment(wavs.float())

    def embed(self, wavs, lengths=None, modules=None):
        """Encoder embeddings of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(N, L)`` waveforms.
        lengths : torch.Tensor or None
            ``(N,)`` relative lengths in (0, 1] (None: all full).
        modules : tuple or None
            ``(compute_features, mean_var_norm, embedding_model)``; default: the
            student's modules from ``self.modules``.

        Returns
        -------
        torch.Tensor
            ``(N, D)`` embeddings (or ``(N, D, T)`` for frame-level encoders).
        """
        feats_fn, norm_fn, model = modules or (
            self.modules.compute_features,
            self.modules.mean_var_norm,
            self.modules.embedding_model,
        )
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        with torch.autocast(device_type=self.device_type, enabled=False):
            feats = feats_fn(wavs.float())
            feats = norm_fn(feats, lengths)
        return model(feats, lengths)

    def view_major(self, views):
        """``(B, V, L) -> (V*B, L)`` with all first views, then all second views..."""
        b, v, length = views.shape
        return views.transpose(0, 1).reshape(v * b, length)

    # ------------------------------------------------------------------ method API
    @abc.abstractmethod
    def compute_forward(self, batch, stage):
        """Method forward pass (subclasses)."""

    @abc.abstractmethod
    def compute_objectives(self, predictions, batch, stage):
        """Method loss (subclasses); call :meth:`record` for extra metrics."""

    def record(self, **metrics):
        """Accumulate per-step scalar metrics for the epoch summary."""
        for key, value in metrics.items():
            self._metric_sums[key] += float(value)
            self._metric_count_per[key] += 1

    def inference_modules(self):
        """Modules used for embeddings at evaluation (DINO overrides: the teacher)."""
        return (
            unwrap(self.modules.compute_features),
            unwrap(self.modules.mean_var_norm),
            unwrap(self.modules.embedding_model),
        )

    @torch.no_grad()
    def encode(self, wavs, lengths=None):
        """Evaluation embeddings (N, D): eval mode, no DDP wrapper, eval precision."""
        mods = self.inference_modules()
        training = [m.training for m in mods]
        for m in mods:
            m.eval()
        try:
            with self.evaluation_ctx:
                emb = self.embed(wavs.to(self.device), lengths, modules=mods)
        finally:
            for m, t in zip(mods, training):
                m.train(t)
        return emb.float()

    # ------------------------------------------------------------------ robustness
    def check_loss_isfinite(self, loss):
        """Stop (or, with ``skip_nonfinite_steps``, skip) on a non-finite loss.

        SpeechBrain's default only counts non-finite losses and still back-propagates
        them, so NaN reaches the weights. Here the step is either refused with a
        message naming the step, the method and the last finite loss, or skipped.
        """
        if torch.isfinite(loss).all():
            self.last_finite_loss = float(loss.detach())
            self._skip_this_step = False
            return
        msg = (
            f"non-finite loss ({float(loss.detach())}) at epoch "
            f"{self.epoch_state.epoch if self.epoch_state else '?'}, step {self.step} "
            f"(optimizer step {self.optimizer_step}) of method {self.method_name}; "
            f"last finite loss: {self.last_finite_loss}"
        )
        if getattr(self.hparams, "skip_nonfinite_steps", False):
            self.skipped_steps += 1
            self._skip_this_step = True
            logger.warning("%s -- step skipped (%d so far)", msg, self.skipped_steps)
            return
        raise SSLSVError(msg + ". Set skip_nonfinite_steps: True to skip such steps.")

    def optimizers_step(self):
        """Unscale, clip **all** parameter groups, method hook, step.

        SpeechBrain clips only ``param_groups[0]`` of each optimiser and treats a
        negative ``max_grad_norm`` as a (reversing!) factor; here the global norm over
        every trainable parameter is clipped (``max_grad_norm: .inf`` disables it) and
        :meth:`on_before_optimizer_step` lets a method act on gradients (DINO's
        per-parameter clipping and frozen last layer, SwAV's frozen prototypes).
        A step after a skipped non-finite loss is refused.
        """
        if self._skip_this_step:
            for opt in self.optimizers_dict.values():
                opt.zero_grad(set_to_none=True)
            self._skip_this_step = False
            return
        optimizers = self.freeze_optimizers(self.optimizers_dict)
        for opt in optimizers.values():
            self.scaler.unscale_(opt)
        max_norm = float(self.max_grad_norm)
        if max_norm < 0:
            raise SSLSVError(
                f"max_grad_norm must be >= 0 or .inf (got {max_norm}); a negative "
                "value would reverse the gradients"
            )
        params = [
            p
            for opt in optimizers.values()
            for group in opt.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if params and math.isfinite(max_norm) and max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            self.last_grad_norm = float(norm)
        if not self.scaler.is_enabled() and self.skip_nonfinite_grads:
            self.check_gradients()
        self.on_before_optimizer_step()
        for opt in optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def on_before_optimizer_step(self):
        """Hook between clipping and the optimiser step (gradients are unscaled)."""

    def on_fit_batch_start(self, batch, should_step):
        """Deferred RNG restore (mid-epoch resume); per-step LR schedule."""
        rng_state = (
            self.checkpointer.recoverables.get("rng") if self.checkpointer else None
        )
        if rng_state is not None:
            rng_state.apply_pending()
        schedule = getattr(self.hparams, "lr_schedule", None)
        if schedule is not None and should_step and hasattr(self, "optimizer"):
            lr = schedule(self.optimizer_step, self.total_optimizer_steps())
            for group in self.optimizer.param_groups:
                if not _is_fixed_lr(group):
                    group["lr"] = lr

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Per-step scalars to TensorBoard / W&B every ``log_every_steps`` steps."""
        every = int(getattr(self.hparams, "log_every_steps", 0) or 0)
        if self.step_logger is not None and every and should_step:
            if self.optimizer_step % every == 0:
                scalars = {"loss": float(loss.detach())}
                if hasattr(self, "optimizer"):
                    scalars["lr"] = self.optimizer.param_groups[0]["lr"]
                if hasattr(self, "last_grad_norm"):
                    scalars["grad_norm"] = self.last_grad_norm
                self.step_logger.log(scalars, self.optimizer_step)

    def _wrap_distributed(self):
        """DDP-wrap trainable modules, with synchronised BatchNorm unless disabled.

        SpeechBrain converts BatchNorm to ``torch.nn.SyncBatchNorm`` unconditionally,
        which only runs on accelerators (``speechbrain_integration.md`` §2). Here:
        ``sync_batchnorm: True`` (default) uses ``SyncBatchNorm`` on GPUs and
        :class:`~sslsv_sb.distributed.CPUSyncBatchNorm` on CPU, so DDP computes what
        one process would on the global batch; ``sync_batchnorm: False`` keeps
        per-rank statistics on every device (sslsv's MoCo configs).
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel as DDP

        sync = getattr(self.hparams, "sync_batchnorm", True)
        cuda = self.device_type == "cuda"
        for name, module in self.modules.items():
            if not any(p.requires_grad for p in module.parameters()):
                continue
            if sync:
                module = (
                    torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
                    if cuda
                    else convert_sync_batchnorm_cpu(module)
                )
            self.modules[name] = DDP(
                module,
                device_ids=[self.device] if cuda else None,
                find_unused_parameters=self.find_unused_parameters,
            )

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """Under DDP, honour ``shuffle`` from the loader options.

        SpeechBrain's DDP sampler shuffles unless a ``sorting`` hparam says otherwise;
        here ``dataloader_options.shuffle`` decides on one process and on many alike.
        """
        if not self.distributed_launch or loader_kwargs.get("sampler") is not None:
            return super()._train_loader_specifics(dataset, loader_kwargs)
        from torch.utils.data.distributed import DistributedSampler

        shuffle = loader_kwargs.pop("shuffle", True)
        self.train_sampler = DistributedSampler(
            dataset,
            shuffle=shuffle,
            seed=int(getattr(self.hparams, "seed", 0)),
            drop_last=loader_kwargs.get("drop_last", False),
        )
        loader_kwargs["sampler"] = self.train_sampler
        return loader_kwargs

    # ------------------------------------------------------------------ optimisation
    def param_groups(self):
        """Trainable parameters, as optimiser parameter groups.

        Frozen parameters (EMA teachers, frozen encoders) are excluded. With
        ``no_weight_decay_bias_norm: True`` in the yaml, biases and normalisation
        parameters (``ndim <= 1``) get ``weight_decay = 0`` (DINO, arXiv 2104.14294).
        Subclasses extend this for per-module learning rates.
        """
        params = [p for p in self.modules.parameters() if p.requires_grad]
        if not getattr(self.hparams, "no_weight_decay_bias_norm", False):
            return [{"params": params}]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def init_optimizers(self):
        """One optimiser over :meth:`param_groups` (trainable parameters only)."""
        if self.opt_class is None:
            return
        self.optimizer = self.opt_class(self.param_groups())
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **kwargs):
        """Record the number of training batches per epoch (for step schedules)."""
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **kwargs)
        if stage == sb.Stage.TRAIN:
            self.steps_per_epoch = len(loader)
        return loader

    def total_optimizer_steps(self):
        """Optimiser steps of the whole run (for cosine schedules)."""
        per_epoch = getattr(self, "steps_per_epoch", 0) // max(
            1, self.grad_accumulation_factor
        )
        return per_epoch * int(self.hparams.epoch_counter.limit)

    # ------------------------------------------------------------------ checkpoints
    def _make_checkpoints_atomic(self):
        """Mark a checkpoint complete only after every file of it is written.

        SpeechBrain writes ``CKPT.yaml`` first and the state files after it, so a
        SIGKILL in between leaves a checkpoint that looks valid and fails to load.
        Here a ``COMPLETE`` marker is written last; at fit start, checkpoints
        without it are moved aside (``save/incomplete-*``) and the previous one is
        used, so killing the run at any moment and re-running the command resumes.
        """
        ckpt = self.checkpointer
        if getattr(ckpt, "_sslsv_atomic", False):
            return
        original = ckpt.save_checkpoint

        def save_checkpoint(*args, **kwargs):
            saved = original(*args, **kwargs)
            if saved is not None and if_main_process():
                marker = os.path.join(saved.path, COMPLETE_MARKER)
                with open(marker, "w", encoding="utf-8") as f:
                    f.write("complete\n")
            return saved

        ckpt.save_checkpoint = save_checkpoint
        ckpt._sslsv_atomic = True

    def _set_aside_incomplete_checkpoints(self):
        """Move checkpoints lacking the completion marker out of the way."""
        from speechbrain.utils.distributed import ddp_barrier

        folder = str(self.checkpointer.checkpoints_dir)
        if if_main_process() and os.path.isdir(folder):
            for path in sorted(glob.glob(os.path.join(folder, "CKPT+*"))):
                complete = os.path.isfile(os.path.join(path, COMPLETE_MARKER))
                if complete and os.path.isfile(os.path.join(path, "CKPT.yaml")):
                    continue
                dest = os.path.join(folder, "incomplete-" + os.path.basename(path))
                os.replace(path, dest)
                logger.warning("incomplete checkpoint %s moved to %s", path, dest)
        ddp_barrier()

    # ------------------------------------------------------------------ stages
    def on_fit_start(self):
        """Per-rank RNG, then SpeechBrain's start (compile, DDP, optimisers, recovery).

        On-device random choices must differ across DDP ranks (``seed_everything``
        seeds every rank alike). A corrupt or incompatible checkpoint is a clear
        error naming the checkpoint, never a silent re-initialisation.
        """
        seed = int(getattr(self.hparams, "seed", 0))
        torch.manual_seed(seed + 1000 * rank())
        if self.checkpointer is not None:
            self._set_aside_incomplete_checkpoints()
        try:
            super().on_fit_start()
        except SSLSVError:
            raise
        except Exception as err:  # noqa: BLE001 -- re-raised unless recovering
            ckpts = self.checkpointer.find_checkpoints() if self.checkpointer else []
            if not ckpts:
                raise
            msg = " ".join(str(err).split())[:300]
            raise SSLSVError(
                f"cannot resume from {ckpts[0].path}: {type(err).__name__}: {msg}. "
                "The checkpoint is corrupt or from another configuration; delete it "
                "or use another --output_folder."
            ) from err

    def on_stage_start(self, stage, epoch=None):
        """Publish the epoch to the data pipeline; reset epoch metrics."""
        if self.epoch_state is not None and epoch is not None:
            self.epoch_state.epoch = int(epoch)
        self._metric_sums = defaultdict(float)
        self._metric_count_per = defaultdict(int)
        self._stage_start = time.time()

    def epoch_metrics(self):
        """Mean of each recorded metric over the epoch (plain floats)."""
        return {
            k: self._metric_sums[k] / max(1, self._metric_count_per[k])
            for k in self._metric_sums
        }

    def validate(self, epoch):
        """EER (%) on ``valid_trial_list`` computed on the main process.

        The main process embeds with the unwrapped modules (going through a DDP
        wrapper on one rank only would hang); the others wait at the barrier and
        receive the result by broadcast.
        """
        from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast

        from sslsv_sb.evaluation.verification import score_trial_lists

        eer = None
        if if_main_process():
            res = score_trial_lists(
                self.encode,
                [self.hparams.valid_trial_list_path],
                self.hparams.data_folder,
                crop_seconds=getattr(self.hparams, "valid_crop_seconds", None),
                n_crops=int(getattr(self.hparams, "valid_n_crops", 1)),
            )
            eer = float(next(iter(res.values()))["cosine"]["eer"])
        ddp_barrier()
        eer = ddp_broadcast(eer, src=0)
        self.valid_history.append((int(epoch), eer))
        return eer

    def _should_stop(self):
        """Early stopping: no EER improvement for ``patience`` validations."""
        patience = getattr(self.hparams, "patience", None)
        if patience is None or len(self.valid_history) <= patience:
            return False
        best = min(e for _, e in self.valid_history)
        recent = [e for _, e in self.valid_history[-int(patience) :]]
        return min(recent) > best

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, validate, step the LR schedule and checkpoint (TRAIN)."""
        if stage != sb.Stage.TRAIN:
            return
        stats = {"loss": float(stage_loss)}
        stats.update(self.epoch_metrics())
        elapsed = time.time() - self._stage_start
        stats["time_s"] = round(elapsed, 1)
        steps = getattr(self, "steps_per_epoch", 0)
        if steps and elapsed > 0:
            stats["steps_per_s"] = round(steps / elapsed, 3)
        if self.skipped_steps:
            stats["skipped_steps"] = self.skipped_steps
        lr = (
            self.optimizer.param_groups[0]["lr"] if hasattr(self, "optimizer") else None
        )
        meta = {"epoch": int(epoch), "train_loss": float(stage_loss)}
        every = int(getattr(self.hparams, "valid_every_n_epochs", 1) or 1)
        if getattr(self.hparams, "valid_trial_list_path", None) and epoch % every == 0:
            stats["valid_eer"] = self.validate(epoch)
            meta["valid_eer"] = stats["valid_eer"]
        if getattr(self.hparams, "lr_annealing", None) is not None:
            _, new_lr = self.hparams.lr_annealing(epoch)
            for group in self.optimizer.param_groups:
                if not _is_fixed_lr(group):  # e.g. SimSiam's predictor
                    group["lr"] = new_lr
        if hasattr(self.hparams, "train_logger"):
            # log_stats is @main_process_only, which broadcasts: call it on every rank.
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats=stats
            )
        if self.step_logger is not None:
            self.step_logger.log(stats, self.optimizer_step, prefix="epoch")
        if not math.isfinite(stats["loss"]):
            logger.warning("epoch %s average loss is not finite", epoch)
        stop = self._should_stop()
        if stop:
            logger.info("early stopping at epoch %s (patience exhausted)", epoch)
            self.hparams.epoch_counter.current = self.hparams.epoch_counter.limit
            meta["early_stopped"] = True
        if self.checkpointer is not None:
            # Reset the running counters *before* saving (speechbrain_integration §7.3).
            self.step = 0
            self.avg_train_loss = 0.0
            keep = int(getattr(self.hparams, "keep_checkpoints", 1))
            if "valid_eer" in meta:  # best by validation EER + the most recent ones
                self.checkpointer.save_and_keep_only(
                    meta=meta,
                    num_to_keep=keep,
                    min_keys=["valid_eer"],
                    keep_recent=True,
                )
            else:
                self.checkpointer.save_and_keep_only(meta=meta, num_to_keep=keep)
