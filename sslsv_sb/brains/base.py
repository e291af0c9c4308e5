"""``SSLBrain``: the shared SpeechBrain ``Brain`` under every method.

Data flow of one training step (``docs/architecture.md``)::

    batch.views (B, V, L) -> view-major (V*B, L) -> augmentation (per row, on device)
      -> compute_features (Fbank) -> mean_var_norm (per utterance) -> embedding_model
      -> method head(s) -> loss

A method subclass implements ``compute_forward`` / ``compute_objectives`` (and, when it
needs them, ``param_groups`` for parameter groups and ``inference_modules`` for a
teacher at inference). Everything shared by the methods lives here: views, features,
augmentation, embedding extraction, the running epoch, per-epoch metrics (the loss's
``last_metrics`` are recorded automatically), optimiser groups and schedules,
validation / early stopping and checkpointing. The corrections of SpeechBrain's own
behaviour (clipping, non-finite losses, DDP wrapping, the DDP sampler, atomic
checkpoints) are in :mod:`sslsv_sb.brains.sb_workarounds`.
"""

import abc
import logging
import math
import time

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from sslsv_sb.brains.sb_workarounds import SpeechBrainWorkarounds
from sslsv_sb.distributed import rank, unwrap
from sslsv_sb.errors import SSLSVError
from sslsv_sb.schedules import cosine_warmup_lr
from sslsv_sb.training import EpochMetrics, RNGState

logger = logging.getLogger(__name__)


def _is_fixed_lr(group):
    """True for optimiser groups whose LR no schedule may change (``fixed_lr``)."""
    value = group.get("fixed_lr")
    return value is not None and value is not False


@torch.no_grad()
def clip_gradients_per_parameter(parameters, max_norm, eps=1e-6):
    """Clip the gradient of each parameter to L2 norm ``max_norm`` on its own.

    DINO's ``utils.clip_gradients`` (arXiv 2104.14294; sslsv does the same):
    ``coef = max_norm / (||g|| + 1e-6)`` and ``g <- coef * g`` when ``coef < 1``.
    Unlike ``torch.nn.utils.clip_grad_norm_``, the norm is per parameter, not over
    all parameters.

    Arguments
    ---------
    parameters : iterable of torch.Tensor
        Parameters (those without a gradient are skipped).
    max_norm : float
        Maximal gradient norm of each parameter.
    eps : float
        Added to the norm (DINO: 1e-6).

    Returns
    -------
    list of torch.Tensor
        The per-parameter gradient norms before clipping (0-d tensors).

    Example
    -------
    >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
    >>> q = torch.nn.Parameter(torch.zeros(1)); q.grad = torch.tensor([0.5])
    >>> _ = clip_gradients_per_parameter([p, q], 1.0)
    >>> [round(float(x.grad.norm()), 4) for x in (p, q)]
    [1.0, 0.5]
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return []
    norms = torch._foreach_norm(grads)
    coefs = [(max_norm / (n + eps)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)
    return norms


class SSLBrain(SpeechBrainWorkarounds, abc.ABC):
    """Base Brain for self-supervised (and supervised baseline) speaker encoders.

    Expected ``modules`` (yaml): ``compute_features``, ``mean_var_norm``,
    ``embedding_model``, optionally ``augment`` (a
    :class:`~sslsv_sb.data.augment.ViewAugment`) and the method's heads and losses.

    Expected ``hparams``: ``epoch_counter``, optionally ``train_logger``,
    ``lr_annealing`` (``f(epoch) -> (old_lr, new_lr)``), ``lr_schedule``
    (``f(step, total_steps) -> lr``), ``warmup_cosine`` (with ``lr``,
    ``warmup_epochs``, ``min_lr``: :meth:`warmup_cosine_lr` per step instead of
    ``lr_annealing``), ``clip_grad`` (per-parameter gradient clipping, see
    :func:`clip_gradients_per_parameter`), ``no_weight_decay_bias_norm``,
    ``keep_checkpoints``, ``skip_nonfinite_steps`` and ``sync_batchnorm``
    (:class:`~sslsv_sb.brains.sb_workarounds.SpeechBrainWorkarounds`).
    """

    method_name = "ssl"

    def __init__(self, *args, epoch_state=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_state = epoch_state
        self.metrics = EpochMetrics()
        self.valid_history = []  # (epoch, EER %) of the validation trial list
        self.rng_state = RNGState()
        if (
            self.checkpointer is not None
            and "rng" not in self.checkpointer.recoverables
        ):
            self.checkpointer.add_recoverable("rng", self.rng_state)
        if self.checkpointer is not None:
            if "epoch_metrics" in self.checkpointer.recoverables:
                self.metrics = self.checkpointer.recoverables["epoch_metrics"]
            else:  # optional: checkpoints of earlier versions do not have it
                self.checkpointer.add_recoverable(
                    "epoch_metrics", self.metrics, optional_load=True
                )
        self.step_logger = getattr(self.hparams, "step_logger", None)

    # ------------------------------------------------------------------ views
    def get_views(self, batch, key="views", n_views=None):
        """``(B, V, L)`` tensor of the views stored under ``key``, on the device.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.<key>`` holds the crops of the view group ``key``.
        key : str
            View group (``view_groups`` key of the yaml).
        n_views : int or None
            The ``V`` the method needs; another count is a configuration error.
        """
        views = getattr(batch, key).data.to(self.device)
        if views.dim() != 3:
            raise ValueError(f"batch.{key} must be (B, V, L), got {tuple(views.shape)}")
        if n_views is not None and views.shape[1] != n_views:
            crops = "crop" if n_views == 1 else "crops"
            raise SSLSVError(
                f"{self.method_name} needs {n_views} {crops} per sample in "
                f"view_groups.{key}, got {views.shape[1]}"
            )
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
        """Method loss (subclasses).

        The ``last_metrics`` of ``modules.loss`` are recorded after every training
        batch (:meth:`record_loss_metrics`); call :meth:`record` for others.
        """

    def epoch0(self):
        """0-based index of the running epoch (SpeechBrain's ``EpochCounter`` is
        1-based).

        Every schedule of ``sslsv_sb.schedules`` and of the losses takes 0-based
        epochs; this is ``epoch_counter.current - 1`` (0 before the first epoch).
        """
        return max(0, int(self.hparams.epoch_counter.current) - 1)

    def record(self, **metrics):
        """Accumulate per-step scalar metrics for the epoch summary.

        Arguments
        ---------
        **metrics : float or torch.Tensor
            Python numbers, or 0-d tensors on any device. Tensors are detached and
            summed on their device in float64 (no host synchronisation per step; the
            sums equal those of their ``float()`` values), and converted once, by
            :meth:`epoch_metrics`.
        """
        for key, value in metrics.items():
            if torch.is_tensor(value):
                wide = torch.float32 if value.device.type == "mps" else torch.float64
                value = value.detach().to(wide)
            else:
                value = float(value)
            self.metrics.add(key, value)

    @property
    def _metric_sums(self):
        """``{metric: sum}`` of the running epoch."""
        return self.metrics.sums

    @property
    def _metric_count_per(self):
        """``{metric: number of values}`` of the running epoch."""
        return self.metrics.counts

    def record_loss_metrics(self):
        """Record the ``last_metrics`` dict of ``modules.loss`` (but its ``loss``).

        Called after every training batch (:meth:`on_fit_batch_end`). Losses keep
        their metrics of the last call there as detached tensors (or numbers); the
        ``loss`` entry is left out because the stage loss is logged already. A loss
        without ``last_metrics`` (one returning a dict) records nothing here.
        """
        if "loss" not in self.modules:
            return
        metrics = getattr(unwrap(self.modules.loss), "last_metrics", None) or {}
        self.record(**{k: v for k, v in metrics.items() if k != "loss"})

    def loss_and_record(self, out, stage):
        """Scalar loss of a loss that returns a dict; its other entries are recorded.

        For losses returning ``{"loss": scalar, <metric>: value, ...}`` (LIM,
        Combiner) instead of keeping ``last_metrics``.

        Arguments
        ---------
        out : dict
            The loss output.
        stage : sb.Stage
            Metrics are recorded in TRAIN only.

        Returns
        -------
        torch.Tensor
            ``out["loss"]``.
        """
        if stage == sb.Stage.TRAIN:
            self.record(**{k: v for k, v in out.items() if k != "loss"})
        return out["loss"]

    def inference_modules(self):
        """Modules used for embeddings at evaluation (DINO overrides: the teacher)."""
        return (
            unwrap(self.modules.compute_features),
            unwrap(self.modules.mean_var_norm),
            unwrap(self.modules.embedding_model),
        )

    @torch.no_grad()
    def encode(self, wavs, lengths=None, modules=None):
        """Evaluation embeddings (N, D): eval mode, no DDP wrapper, eval precision.

        ``modules``: ``(compute_features, mean_var_norm, encoder)``, default
        :meth:`inference_modules`.
        """
        mods = modules or self.inference_modules()
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
        """Loss metrics for the epoch (not of a skipped non-finite batch); per-step
        scalars to TensorBoard / W&B every ``log_every_steps`` optimiser steps."""
        if not self._batch_skipped:
            self.record_loss_metrics()
        every = int(getattr(self.hparams, "log_every_steps", 0) or 0)
        if self.step_logger is not None and every and should_step:
            if self.optimizer_step % every == 0:
                scalars = {"loss": float(loss.detach())}
                if hasattr(self, "optimizer"):
                    scalars["lr"] = self.optimizer.param_groups[0]["lr"]
                if hasattr(self, "last_grad_norm"):
                    scalars["grad_norm"] = self.last_grad_norm
                self.step_logger.log(scalars, self.optimizer_step)

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

    def warmup_cosine_lr(self, step, total_steps):
        """Per-step LR: linear warm-up over ``warmup_epochs``, cosine to ``min_lr``.

        ``schedules.cosine_warmup_lr`` with the warm-up converted from epochs to
        optimiser steps (``lr`` is the peak LR; DINO, arXiv 2104.14294).
        """
        per_epoch = getattr(self, "steps_per_epoch", 0) // max(
            1, self.grad_accumulation_factor
        )
        warmup = min(
            total_steps, int(getattr(self.hparams, "warmup_epochs", 0)) * per_epoch
        )
        return cosine_warmup_lr(
            step,
            total_steps,
            float(self.hparams.lr),
            warmup_steps=warmup,
            min_lr=float(getattr(self.hparams, "min_lr", 0.0)),
        )

    def on_before_optimizer_step(self):
        """Per-parameter clipping to ``clip_grad`` (off when absent or 0), after the
        global ``max_grad_norm`` clipping, on unscaled gradients."""
        super().on_before_optimizer_step()
        clip = getattr(self.hparams, "clip_grad", None)
        if clip:
            params = [
                p
                for opt in self.optimizers_dict.values()
                for g in opt.param_groups
                for p in g["params"]
            ]
            clip_gradients_per_parameter(params, float(clip))

    def total_optimizer_steps(self):
        """Optimiser steps of the whole run (for cosine schedules)."""
        per_epoch = getattr(self, "steps_per_epoch", 0) // max(
            1, self.grad_accumulation_factor
        )
        return per_epoch * int(self.hparams.epoch_counter.limit)

    # ------------------------------------------------------------------ stages
    def on_fit_start(self):
        """Per-step LR if asked, per-rank RNG, then the start (compile, DDP,
        optimisers, recovery).

        ``warmup_cosine: True`` installs :meth:`warmup_cosine_lr` as the per-step
        ``lr_schedule`` (run in :meth:`on_fit_batch_start`) and switches the
        epoch-level ``lr_annealing`` off, so the two never fight. On-device random
        choices must differ across DDP ranks (``seed_everything`` seeds every rank
        alike).
        """
        if getattr(self.hparams, "warmup_cosine", False):
            self.hparams.lr_schedule = self.warmup_cosine_lr
            self.hparams.lr_annealing = None
        seed = int(getattr(self.hparams, "seed", 0))
        torch.manual_seed(seed + 1000 * rank())
        super().on_fit_start()

    def on_stage_start(self, stage, epoch=None):
        """Publish the epoch to the data pipeline; reset epoch metrics (but those
        of an epoch resumed from an intra-epoch checkpoint)."""
        super().on_stage_start(stage, epoch)
        if self.epoch_state is not None and epoch is not None:
            self.epoch_state.epoch = int(epoch)
        if stage != sb.Stage.TRAIN or self.step == 0:
            self.metrics.reset()
        self._stage_start = time.time()

    def epoch_metrics(self):
        """Mean of each recorded metric over the epoch (plain floats; the only place
        recorded tensors are read back to the host)."""
        return self.metrics.means()

    def validation_encoders(self):
        """``{stat name: encode function}`` scored on ``valid_trial_list``; the
        ``valid_eer`` entry (the evaluation encoder) drives early stopping and model
        selection, the others are logged only (e.g. DINO's student)."""
        return {"valid_eer": self.encode}

    def validate(self, epoch):
        """EER (%) on ``valid_trial_list`` of each :meth:`validation_encoders` entry,
        computed on the main process: ``{"valid_eer": eer, ...}``.

        The main process embeds with the unwrapped modules (going through a DDP
        wrapper on one rank only would hang); the others wait at the barrier and
        receive the result by broadcast.
        """
        from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast

        from sslsv_sb.evaluation.verification import score_trial_lists

        eers = None
        if if_main_process():
            eers = {}
            for name, encode in self.validation_encoders().items():
                res = score_trial_lists(
                    encode,
                    [self.hparams.valid_trial_list_path],
                    self.hparams.data_folder,
                    crop_seconds=getattr(self.hparams, "valid_crop_seconds", None),
                    n_crops=int(getattr(self.hparams, "valid_n_crops", 1)),
                )
                eers[name] = float(next(iter(res.values()))["cosine"]["eer"])
        ddp_barrier()
        eers = ddp_broadcast(eers, src=0)
        self.valid_history.append((int(epoch), eers["valid_eer"]))
        return eers

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
        stats = {"loss": self.epoch_loss(stage_loss)}
        stats.update(self.epoch_metrics())
        elapsed = time.time() - self._stage_start
        stats["time_s"] = round(elapsed, 1)
        steps = getattr(self, "steps_per_epoch", 0)
        if steps and elapsed > 0:
            stats["steps_per_s"] = round(steps / elapsed, 3)
        if self.skipped.epoch:
            stats["skipped_steps"] = self.skipped.epoch
        lr = (
            self.optimizer.param_groups[0]["lr"] if hasattr(self, "optimizer") else None
        )
        meta = {"epoch": int(epoch), "train_loss": stats["loss"]}
        every = int(getattr(self.hparams, "valid_every_n_epochs", 1) or 1)
        if getattr(self.hparams, "valid_trial_list_path", None) and epoch % every == 0:
            stats.update(self.validate(epoch))
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
            keep = int(getattr(self.hparams, "keep_checkpoints", 1))
            if "valid_eer" in meta:  # best by validation EER + the most recent ones
                self.save_epoch_checkpoint(
                    meta, keep, min_keys=["valid_eer"], keep_recent=True
                )
            else:
                self.save_epoch_checkpoint(meta, keep)
