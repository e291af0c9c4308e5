"""Corrections of SpeechBrain 1.1 ``Brain`` behaviours that break SSL training.

:class:`SpeechBrainWorkarounds` sits between ``speechbrain.Brain`` and
:class:`~sslsv_sb.brains.base.SSLBrain`. Each method overrides one SpeechBrain method
(paths relative to ``site-packages/speechbrain``, version 1.1.2) and its docstring
names what it corrects; the measurements are in ``speechbrain_integration.md``:

* gradient clipping -- ``core.py`` ``Brain.optimizers_step``;
* non-finite losses -- ``core.py`` ``Brain.check_loss_isfinite``;
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
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from sslsv_sb.distributed import convert_sync_batchnorm_cpu
from sslsv_sb.errors import SSLSVError

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "COMPLETE"


class SpeechBrainWorkarounds(sb.Brain):
    """``sb.Brain`` with the SpeechBrain 1.1 behaviours listed in the module corrected.

    hparams read here: ``skip_nonfinite_steps`` (default False: a non-finite loss
    stops the run), ``sync_batchnorm`` (default True), ``seed`` (DDP sampler).
    """

    method_name = "brain"  # named in error messages; each method Brain sets its own

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.optimizer_step_limit, str):
            # From the command line it is a str, and ``fit`` fails comparing it.
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        self.last_finite_loss = None
        self.skipped_steps = 0
        self._skip_this_step = False
        if self.checkpointer is not None:
            self._make_checkpoints_atomic()

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
            self._skip_this_step = False
            return
        epoch_state = getattr(self, "epoch_state", None)
        msg = (
            f"non-finite loss ({float(loss.detach())}) at epoch "
            f"{epoch_state.epoch if epoch_state else '?'}, step {self.step} "
            f"(optimizer step {self.optimizer_step}) of method {self.method_name}; "
            f"last finite loss: {self.last_finite_loss}"
        )
        if getattr(self.hparams, "skip_nonfinite_steps", False):
            self.skipped_steps += 1
            self._skip_this_step = True
            logger.warning("%s -- step skipped (%d so far)", msg, self.skipped_steps)
            return
        raise SSLSVError(msg + ". Set skip_nonfinite_steps: True to skip such steps.")

    # ------------------------------------------------------------------ clipping
    def optimizers_step(self):
        """Unscale, clip **all** parameter groups, :meth:`on_before_optimizer_step`,
        step.

        Corrects ``core.py`` ``Brain.optimizers_step``, which clips only
        ``param_groups[0]`` of each optimiser and passes a negative
        ``max_grad_norm`` (documented as "disable") to ``clip_grad_norm_``, which then
        reverses the gradients. Here the global norm over every trainable parameter
        is clipped, ``max_grad_norm: .inf`` disables clipping and a negative value is
        an error. A step after a skipped non-finite loss is refused.
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
        the run at any moment and re-running the command resumes.
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


__all__ = ["COMPLETE_MARKER", "SpeechBrainWorkarounds"]
