"""EMA ("momentum") teachers shared by MoCo, BYOL and DINO.

A teacher module is declared in the yaml next to its student (same constructor, any
initial weights: ``!copy`` would re-initialise, see ``speechbrain_integration.md`` §3)
and listed in ``momentum_pairs``. At fit start the student's weights are copied into
the teacher *before* checkpoint recovery (which then overwrites them on resume), the
teacher is frozen (excluded from the optimiser and from DDP) and after every optimiser
step ``teacher <- tau * teacher + (1 - tau) * student`` (parameters only; buffers such
as BatchNorm statistics are the teacher's own). Teachers must be checkpoint
recoverables in the yaml. Under DDP the teachers' BatchNorm is synchronised across
ranks like the students' (``sync_batchnorm``), unless the method opts out (MoCo's
shuffle-BN).
"""

import torch

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.distributed import unwrap
from sslsv_sb.schedules import cosine_tau


@torch.no_grad()
def copy_weights(student, teacher):
    """Copy the student's state into the teacher and freeze the teacher."""
    teacher.load_state_dict(unwrap(student).state_dict())
    teacher.requires_grad_(False)


@torch.no_grad()
def ema_update(student, teacher, tau):
    """``teacher_params <- tau * teacher_params + (1 - tau) * student_params``."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in unwrap(student).parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(t_params, s_params, 1.0 - tau)


class MomentumBrain(SSLBrain):
    """SSLBrain with EMA teachers (MoCo arXiv 1911.05722, BYOL arXiv 2006.07733,
    DINO arXiv 2104.14294).

    hparams: ``momentum_pairs`` (list of ``[student_key, teacher_key]`` in
    ``modules``), ``start_tau`` (default 0.996), ``end_tau`` (1.0), ``tau_scheduler``
    (cosine schedule on; False keeps ``start_tau`` constant, as MoCo does),
    ``sync_batchnorm`` (default True; see :meth:`sync_teacher_batchnorm`).
    """

    #: Synchronise the teachers' BatchNorm under DDP when ``sync_batchnorm`` is on.
    #: MoCo sets False: shuffle-BN needs per-rank key-encoder statistics.
    sync_teacher_bn = True

    def momentum_pairs(self):
        """``[(student_module, teacher_module), ...]``."""
        return [
            (self.modules[s], self.modules[t])
            for s, t in getattr(self.hparams, "momentum_pairs", [])
        ]

    def teacher_modules(self):
        """``(compute_features, mean_var_norm, teacher_model)`` for :meth:`embed`:
        the teacher encoder behind the student's front-end (MoCo's key encoder,
        BYOL's target, DINO's teacher)."""
        return (
            self.modules.compute_features,
            self.modules.mean_var_norm,
            self.modules.teacher_model,
        )

    def current_tau(self):
        """Momentum for the current optimiser step."""
        start = float(getattr(self.hparams, "start_tau", 0.996))
        if not getattr(self.hparams, "tau_scheduler", True):
            return start
        end = float(getattr(self.hparams, "end_tau", 1.0))
        return cosine_tau(self.optimizer_step, self.total_optimizer_steps(), start, end)

    def sync_teacher_batchnorm(self):
        """Synchronised BatchNorm in the EMA teachers under DDP (as in the DINO code).

        The DDP wrapping converts BatchNorm only in the modules it wraps (the
        trainable ones). A frozen teacher is never wrapped, so without this its
        training-mode BatchNorm would normalise with per-rank statistics, unlike one
        process on the global batch (DINO converts the teacher too; sslsv converts
        the whole model). Conversion is in place below the top-level module, so the
        checkpointer's objects and the state-dict keys are unchanged. Off without
        DDP, with ``sync_batchnorm: False`` or when :attr:`sync_teacher_bn` is False.
        """
        if not (
            self.distributed_launch
            and self.sync_teacher_bn
            and getattr(self.hparams, "sync_batchnorm", True)
        ):
            return
        for _, t_key in getattr(self.hparams, "momentum_pairs", []):
            teacher = self.modules[t_key]
            if self.convert_sync_batchnorm(teacher) is not teacher:
                raise ValueError(f"teacher module {t_key} must not be a bare BatchNorm")
            teacher.requires_grad_(False)

    def _wrap_distributed(self):
        """DDP-wrap the students (base), then synchronise the teachers' BatchNorm."""
        super()._wrap_distributed()
        self.sync_teacher_batchnorm()

    def on_fit_start(self):
        """Teacher <- student and freeze, *then* wrap / build optimisers / recover."""
        for student, teacher in self.momentum_pairs():
            copy_weights(student, teacher)
        super().on_fit_start()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """EMA update after each optimiser step."""
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        if should_step:
            tau = self.current_tau()
            for student, teacher in self.momentum_pairs():
                ema_update(student, teacher, tau)
            self.record(tau=tau)
