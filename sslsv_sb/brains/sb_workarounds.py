"""Corrections of SpeechBrain 1.1 ``Brain`` behaviours that break SSL training.

:class:`SpeechBrainWorkarounds` sits between ``speechbrain.Brain`` and
:class:`~sslsv_sb.brains.base.SSLBrain`. Each method overrides one SpeechBrain method
(paths relative to ``site-packages/speechbrain``, version 1.1.2) and its docstring
names what it corrects; the measurements are in ``speechbrain_integration.md``:

* gradient clipping -- ``core.py`` ``Brain.optimizers_step``;
* non-finite losses -- ``core.py`` ``Brain.check_loss_isfinite`` (a skipped step
  is skipped on every DDP rank) and ``Brain.update_average`` (the epoch loss is the
  mean of the finite losses, NaN when there was none, never 0);
* non-finite weights -- ``core.py`` ``Brain.fit_batch`` and
  ``utils/checkpoints.py`` ``Checkpointer.save_checkpoint`` check nothing, so
  NaN/Inf weights are trained on and saved; here they stop the run, unsaved;
* DDP wrapping and BatchNorm -- ``core.py`` ``Brain._wrap_distributed``;
* the DDP training sampler -- ``core.py`` ``Brain._train_loader_specifics``;
* atomic checkpoints and resume errors -- ``utils/checkpoints.py``
  ``Checkpointer.save_checkpoint`` and ``core.py`` ``Brain.on_fit_start``;
* running counters in end-of-epoch checkpoints -- ``core.py`` ``Brain._fit_train``;
* ``--optimizer_step_limit`` read as a string -- ``utils/run_opts.py``
  ``RunOptions._create_parser`` gives options whose default is None no type.

Nothing here is specific to a self-supervised method.
"""

import glob
import logging
import math
import os

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from sslsv_sb.distributed import convert_sync_batchnorm_cpu, is_distributed
from sslsv_sb.errors import SSLSVError
from sslsv_sb.training import first_nonfinite, state_tensors

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "COMPLETE"
# Optimiser steps between two checks that every weight and buffer is finite
# (yaml ``check_finite_every``; 0: only before each checkpoint save).
CHECK_FINITE_EVERY = 10


@register_checkpoint_hooks
class SkippedSteps:
    """Counts of the batches skipped for a non-finite loss (checkpointed).

    ``total`` over the run, ``epoch`` in the running epoch: an intra-epoch resume
    reports the same epoch loss (the mean over the epoch's finite batches) and the
    same counts as an uninterrupted run.

    Example
    -------
    >>> c = SkippedSteps(); c.total, c.epoch = 3, 1
    >>> import tempfile, os; path = os.path.join(tempfile.mkdtemp(), "s.ckpt")
    >>> c.save(path); d = SkippedSteps(); d.load(path, end_of_epoch=False)
    >>> d.total, d.epoch
    (3, 1)
    """

    def __init__(self):
        self.total = 0
        self.epoch = 0

    @mark_as_saver
    def save(self, path):
        """Write the counts (YAML)."""
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"total": self.total, "epoch": self.epoch}, f)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Read the counts."""
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f)
        self.total, self.epoch = int(saved["total"]), int(saved["epoch"])


class SpeechBrainWorkarounds(sb.Brain):
    """``sb.Brain`` with the SpeechBrain 1.1 behaviours listed in the module corrected.

    hparams read here: ``skip_nonfinite_steps`` (default False: a non-finite loss
    stops the run), ``check_finite_every`` (default :data:`CHECK_FINITE_EVERY`),
    ``sync_batchnorm`` (default True), ``seed`` (DDP sampler).
    """

    method_name = "brain"  # named in error messages; each method Brain sets its own

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.optimizer_step_limit, str):
            # From the command line it is a str, and ``fit`` fails comparing it.
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        self.last_finite_loss = None
        self.skipped = SkippedSteps()
        self._skip_this_step = False  # until the next optimiser step
        self._batch_skipped = False  # this batch's loss is left out of the average
        if self.checkpointer is not None:
            self._make_checkpoints_atomic()
            if "skipped_steps" not in self.checkpointer.recoverables:
                # optional: checkpoints of earlier versions do not have it
                self.checkpointer.add_recoverable(
                    "skipped_steps", self.skipped, optional_load=True
                )
            else:
                self.skipped = self.checkpointer.recoverables["skipped_steps"]

    @property
    def skipped_steps(self):
        """Batches skipped for a non-finite loss since the run started."""
        return self.skipped.total

    # ------------------------------------------------------------------ weights
    def state_tensors(self):
        """``(name, tensor)`` of every floating parameter and persistent buffer
        of the modules and of the checkpointed modules (what a checkpoint holds)."""
        modules = list(self.modules.items())
        if self.checkpointer is not None:
            modules += [
                (name, obj)
                for name, obj in self.checkpointer.recoverables.items()
                if isinstance(obj, torch.nn.Module)
            ]
        return state_tensors(modules)

    def check_finite_state(self, when, reduce_ranks=True):
        """Stop with an :class:`SSLSVError` if a weight or buffer is NaN or Inf.

        Corrects ``core.py`` ``Brain.fit_batch`` and ``Checkpointer.save_checkpoint``,
        which train on and save non-finite weights (a non-finite loss can be
        skipped, but an optimiser step with a huge learning rate can still overflow
        the weights). The check is one fused norm per (device, dtype) group and one
        host read (:func:`sslsv_sb.training.first_nonfinite`). Nothing is saved: the
        last checkpoint, written after a passing check, stays the resume point.

        Arguments
        ---------
        when : str
            Where the check runs, for the message (e.g. ``"checked before saving
            a checkpoint"``).
        reduce_ranks : bool
            Agree across DDP ranks (every rank must call it then).
        """
        name = first_nonfinite(self.state_tensors(), reduce_ranks=reduce_ranks)
        if name is None:
            return
        ckpts = []
        if self.checkpointer is not None and os.path.isdir(
            self.checkpointer.checkpoints_dir
        ):
            ckpts = self.checkpointer.find_checkpoints()
        if ckpts:
            epoch = ckpts[0].meta.get("epoch")
            at = f", epoch {epoch}" if epoch is not None else ""
            last = (
                f"the last checkpoint ({ckpts[0].path}{at}) has finite weights and "
                "is the resume point"
            )
        else:
            last = "no checkpoint was saved yet"
        raise SSLSVError(
            f"non-finite model state at {self._where()} ({when}): {name} holds NaN "
            f"or Inf; nothing saved, {last}. Lower --lr or --max_grad_norm."
        )

    def _where(self):
        """``epoch E, step S (optimizer step O) of method M`` for messages."""
        counter = getattr(self.hparams, "epoch_counter", None)
        epoch = getattr(counter, "current", "?")
        return (
            f"epoch {epoch}, step {self.step} (optimizer step {self.optimizer_step}) "
            f"of method {self.method_name}"
        )

    # ------------------------------------------------------------------ losses
    def check_loss_isfinite(self, loss):
        """Stop (or, with ``skip_nonfinite_steps``, skip) on a non-finite loss.

        Corrects ``core.py`` ``Brain.check_loss_isfinite``, which only counts
        non-finite losses up to ``nonfinite_patience`` while ``fit_batch`` still
        back-propagates them, so NaN reaches the weights. Here the step is either
        refused with a message naming the step, the method and the last finite loss,
        or skipped (:meth:`optimizers_step` then drops its gradients).

        Arguments
        ---------
        loss : torch.Tensor
            Scalar (scaled) loss of the step.
        """
        if torch.isfinite(loss).all():
            self.last_finite_loss = float(loss.detach())
            self._batch_skipped = False
            return
        # Weights that are already non-finite explain the loss and cannot be skipped.
        self.check_finite_state("found at a non-finite loss", reduce_ranks=False)
        msg = (
            f"non-finite loss ({float(loss.detach())}) at {self._where()}; "
            f"last finite loss: {self.last_finite_loss}"
        )
        if getattr(self.hparams, "skip_nonfinite_steps", False):
            self.skipped.total += 1
            self.skipped.epoch += 1
            self._skip_this_step = True  # also drops the accumulated gradients
            self._batch_skipped = True
            logger.warning("%s -- step skipped (%d so far)", msg, self.skipped.total)
            return
        raise SSLSVError(msg + ". Set skip_nonfinite_steps: True to skip such steps.")

    def update_average(self, loss, avg_loss):
        """Running mean of the epoch's finite losses.

        Corrects ``core.py`` ``Brain.update_average``, which leaves a non-finite loss
        out but still divides by the number of batches, so skipped batches bias the
        epoch loss (and an epoch of skipped batches reports 0.0).

        Arguments
        ---------
        loss : torch.Tensor
            The batch's (detached) loss.
        avg_loss : float
            Mean of the epoch's previous finite losses.

        Returns
        -------
        float
        """
        if self._batch_skipped:
            return avg_loss
        n = self.step - self.skipped.epoch
        if n <= 0 or not torch.isfinite(loss):
            return avg_loss
        # SpeechBrain's arithmetic, over the finite batches only (equal values when
        # nothing was skipped)
        avg_loss -= avg_loss / n
        avg_loss += float(loss) / n
        return avg_loss

    def epoch_loss(self, stage_loss):
        """The epoch's training loss for the log: NaN when every batch was
        skipped (SpeechBrain's running average would say 0.0)."""
        if self.step and self.skipped.epoch >= self.step:
            logger.warning(
                "every batch of epoch %s (%d) had a non-finite loss and was skipped",
                getattr(self.hparams.epoch_counter, "current", "?"),
                self.step,
            )
            return math.nan
        return float(stage_loss)

    def on_stage_start(self, stage, epoch=None):
        """Reset the epoch's skipped-batch count at the start of a training epoch
        (not on an intra-epoch resume, which continues the saved one)."""
        super().on_stage_start(stage, epoch)
        if stage == sb.Stage.TRAIN and self.step == 0:
            self.skipped.epoch = 0

    # ------------------------------------------------------------------ clipping
    def optimizers_step(self):
        """Unscale, clip **all** parameter groups, :meth:`on_before_optimizer_step`,
        step.

        Corrects ``core.py`` ``Brain.optimizers_step``, which clips only
        ``param_groups[0]`` of each optimiser and passes a negative
        ``max_grad_norm`` (documented as "disable") to ``clip_grad_norm_``, which then
        reverses the gradients. Here the global norm over every trainable parameter
        is clipped, ``max_grad_norm: .inf`` disables clipping and a negative value is
        an error. A step after a skipped non-finite loss is refused, on every DDP
        rank when one rank skips (the gradients were averaged across ranks). Every
        ``check_finite_every`` steps the weights are checked
        (:meth:`check_finite_state`).
        """
        skip = self._skip_this_step
        self._skip_this_step = False
        if is_distributed():
            flag = torch.tensor(int(skip), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            skip = bool(flag)
        if skip:
            for opt in self.optimizers_dict.values():
                opt.zero_grad(set_to_none=True)
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
        every = int(getattr(self.hparams, "check_finite_every", CHECK_FINITE_EVERY))
        if every > 0 and self.optimizer_step % every == 0:
            self.check_finite_state("checked after the optimizer step")

    def on_before_optimizer_step(self):
        """Hook between clipping and the optimiser step (gradients are unscaled).

        Lets a method act on gradients: DINO's per-parameter clipping and frozen last
        layer, SwAV's frozen prototypes.
        """

    # ------------------------------------------------------------------ DDP
    def _wrap_distributed(self):
        """DDP-wrap trainable modules, with synchronised BatchNorm unless disabled.

        Corrects ``core.py`` ``Brain._wrap_distributed``, which converts every
        BatchNorm to ``torch.nn.SyncBatchNorm`` unconditionally; that layer only runs
        on accelerators, so CPU (gloo) DDP fails. Here ``sync_batchnorm: True``
        (default) uses ``SyncBatchNorm`` on GPUs and
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
                module = self.convert_sync_batchnorm(module)
            self.modules[name] = DDP(
                module,
                device_ids=[self.device] if cuda else None,
                find_unused_parameters=self.find_unused_parameters,
            )

    def convert_sync_batchnorm(self, module):
        """BatchNorm of ``module`` synchronised across ranks, for this device type.

        ``torch.nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm` elsewhere;
        parameters and running statistics are shared with the original layers.
        """
        if self.device_type == "cuda":
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return convert_sync_batchnorm_cpu(module)

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """Under DDP, honour ``shuffle`` from the loader options.

        Corrects ``core.py`` ``Brain._train_loader_specifics``, whose DDP sampler
        shuffles unless a ``sorting`` hparam says otherwise (``shuffle: False`` is
        ignored) and is seeded apart from the run's ``seed``. Here
        ``dataloader_options.shuffle`` decides on one process and on many alike.
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

    # ------------------------------------------------------------------ checkpoints
    def _make_checkpoints_atomic(self):
        """Mark a checkpoint complete only after every file of it is written.

        Corrects ``utils/checkpoints.py`` ``Checkpointer.save_checkpoint``, which
        writes ``CKPT.yaml`` first and the state files after it, so a SIGKILL in
        between leaves a checkpoint that looks valid and fails to load. Here a
        ``COMPLETE`` marker is written last; at fit start, checkpoints without it are
        moved aside (``save/incomplete-*``) and the previous one is used, so killing
        the run at any moment and re-running the command resumes. Before anything
        is written the weights are checked (:meth:`check_finite_state`): a
        non-finite state is never saved.
        """
        ckpt = self.checkpointer
        ckpt._sslsv_before_save = self.check_finite_state  # the latest Brain's
        if getattr(ckpt, "_sslsv_atomic", False):
            return
        original = ckpt.save_checkpoint

        def save_checkpoint(*args, **kwargs):
            ckpt._sslsv_before_save("checked before saving a checkpoint")
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

    def on_fit_start(self):
        """Set incomplete checkpoints aside, then SpeechBrain's start, with a clear
        error when recovery fails.

        Corrects ``core.py`` ``Brain.on_fit_start``, where
        ``Checkpointer.recover_if_possible`` raises whatever the loader raised (a
        ``KeyError``, a size mismatch, an unpickling error) without naming the
        checkpoint. Here a corrupt or incompatible checkpoint is an ``SSLSVError``
        naming it, never a silent re-initialisation.
        """
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

    def save_epoch_checkpoint(self, meta, num_to_keep=1, **kwargs):
        """End-of-epoch checkpoint (from ``on_stage_end(TRAIN)``) without stale
        counters.

        Corrects ``core.py`` ``Brain._fit_train``, which resets ``step`` and
        ``avg_train_loss`` only *after* ``on_stage_end(TRAIN)``: a checkpoint saved
        there would store the epoch's last step and average loss, and a resumed run
        would start its next epoch from them (``speechbrain_integration.md`` §7.3).

        Arguments
        ---------
        meta : dict
            Checkpoint meta (plain numbers).
        num_to_keep : int
            Passed to ``Checkpointer.save_and_keep_only``, with ``kwargs``.
        """
        self.step = 0
        self.avg_train_loss = 0.0
        self.checkpointer.save_and_keep_only(
            meta=meta, num_to_keep=num_to_keep, **kwargs
        )


__all__ = [
    "CHECK_FINITE_EVERY",
    "COMPLETE_MARKER",
    "SkippedSteps",
    "SpeechBrainWorkarounds",
]
