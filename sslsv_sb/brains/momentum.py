"""EMA ("momentum") teachers shared by MoCo, BYOL and DINO.

A teacher module is declared in the yaml next to its student (same constructor, any
initial weights: ``!copy`` would re-initialise, see ``speechbrain_integration.md`` §3)
and listed in ``momentum_pairs``. At fit start the student's weights are copied into
the teacher *before* checkpoint recovery (which then overwrites them on resume), the
teacher is frozen (excluded from the optimiser and from DDP) and after every optimiser
step ``teacher <- tau * teacher + (1 - tau) * student`` (parameters only; buffers such
as BatchNorm statistics are the teacher's own). Teachers must be checkpoint
recoverables in the yaml.
"""

import torch

from sslsv_sb.brains.base import SSLBrain, unwrap
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
    """SSLBrain with EMA teachers.

    hparams: ``momentum_pairs`` (list of ``[student_key, teacher_key]`` in
    ``modules``), ``start_tau`` (default 0.996), ``end_tau`` (1.0), ``tau_scheduler``
    (cosine schedule on; False keeps ``start_tau`` constant, as MoCo does).
    """

    def momentum_pairs(self):
        """``[(student_module, teacher_module), ...]``."""
        return [
            (self.modules[s], self.modules[t])
            for s, t in getattr(self.hparams, "momentum_pairs", [])
        ]

    def current_tau(self):
        """Momentum for the current optimiser step."""
        start = float(getattr(self.hparams, "start_tau", 0.996))
        if not getattr(self.hparams, "tau_scheduler", True):
            return start
        end = float(getattr(self.hparams, "end_tau", 1.0))
        return cosine_tau(self.optimizer_step, self.total_optimizer_steps(), start, end)

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
