"""DINO self-distillation loss (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", arXiv 2104.14294).

Teacher outputs are centred and sharpened, ``P_t = softmax((g_t - c) / tau_t)``, the
student's ``P_s = softmax(g_s / tau_s)``; the loss (eq. 3) is the cross-entropy
``-sum_k P_t log P_s`` over all pairs (teacher view j, student view i) with i != j,
averaged over the batch and the pairs. After each training step the centre follows
``c <- m c + (1 - m) mean_batch(g_t)`` (eq. 4), where the batch mean is over the
**global** batch (all-reduced across ranks, as in the DINO code).

Views are laid out view-major: ``(V * N, K)`` = ``cat([view_0, view_1, ...])`` with
the G global views first (the teacher only sees those).
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import all_reduce_mean
from sslsv_sb.schedules import dino_teacher_temp


def _views(x, name, n_views=None):
    """List/tuple of ``(N, K)`` or a ``(V * N, K)`` tensor -> ``(V, N, K)`` fp32."""
    if isinstance(x, (list, tuple)):
        if not x or any(t.dim() != 2 or t.shape != x[0].shape for t in x):
            raise ValueError(
                f"{name}: expected a non-empty list of equal (N, K) tensors"
            )
        return torch.stack([t.float() for t in x])  # (V, N, K)
    if x.dim() != 2 or n_views is None or x.shape[0] % n_views != 0:
        raise ValueError(
            f"{name}: expected a ({n_views} * N, K) tensor, got {tuple(x.shape)}"
        )
    return x.float().reshape(n_views, x.shape[0] // n_views, x.shape[1])  # (V, N, K)


class DINOLoss(nn.Module):
    """DINO cross-entropy with teacher centring and sharpening (arXiv 2104.14294).

    Arguments
    ---------
    out_dim : int
        K, the number of logits (the head's output dimension).
    n_global : int
        G, number of global views (teacher views); sslsv and the paper: 2.
    student_temp : float
        tau_s (0.1).
    teacher_temp : float
        tau_t after the warm-up (0.04; paper up to 0.07).
    warmup_teacher_temp : float
        tau_t at epoch 0 (0.04).
    warmup_epochs : int
        Linear warm-up length of tau_t (paper 30; sslsv config 10, with start = end
        = 0.04 so constant). Default 0 (constant ``teacher_temp``).
    center_momentum : float
        m of the centre EMA (0.9).

    Buffers (checkpoint them): ``center (1, K)``.

    Metrics in ``last_metrics`` (detached): ``teacher_entropy`` (mean entropy of the
    centred/sharpened teacher distribution, nats), ``kl_div`` (mean over pairs and
    batch of KL(P_t || P_s) = loss - teacher entropy), ``teacher_std`` (std over the
    batch of the teacher probabilities, averaged over K; 0 when collapsed to a
    constant output), ``teacher_temp``.

    Example
    -------
    >>> loss = DINOLoss(out_dim=16, n_global=2)
    >>> student, teacher = torch.randn(4 * 3, 16), torch.randn(2 * 3, 16)
    >>> loss(student, teacher, epoch=0).shape
    torch.Size([])
    """

    def __init__(
        self,
        out_dim,
        n_global=2,
        student_temp=0.1,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_epochs=0,
        center_momentum=0.9,
    ):
        super().__init__()
        if student_temp <= 0 or teacher_temp <= 0 or warmup_teacher_temp <= 0:
            raise ValueError("DINO temperatures must be > 0")
        if not 0 <= center_momentum <= 1:
            raise ValueError(
                f"center_momentum must be in [0, 1], got {center_momentum}"
            )
        self.out_dim = out_dim
        self.n_global = n_global
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_epochs = warmup_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_metrics = {}

    def teacher_temperature(self, epoch):
        """tau_t at the 0-based ``epoch`` (``schedules.dino_teacher_temp``)."""
        return dino_teacher_temp(
            epoch, self.teacher_temp, self.warmup_teacher_temp, self.warmup_epochs
        )

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, student_logits, teacher_logits, epoch=0):
        """DINO loss; in training mode also updates the centre.

        Arguments
        ---------
        student_logits : torch.Tensor or list of torch.Tensor
            ``(V * N, K)`` view-major, or a list of V ``(N, K)`` tensors. The first
            ``n_global`` views are the global views (same crops as the teacher's).
        teacher_logits : torch.Tensor or list of torch.Tensor
            ``(G * N, K)`` view-major, or a list of G ``(N, K)`` (detached here).
        epoch : int
            0-based epoch (teacher-temperature schedule).

        Returns
        -------
        torch.Tensor
            Scalar: mean over the ``G * V - G`` pairs (i != j) of the batch-mean
            cross-entropy.
        """
        teacher = _views(teacher_logits, "DINOLoss teacher", self.n_global).detach()
        g, n, k = teacher.shape
        if isinstance(student_logits, (list, tuple)):
            student = _views(student_logits, "DINOLoss student")
        else:
            if student_logits.dim() != 2 or student_logits.shape[0] % n != 0:
                raise ValueError(
                    f"DINOLoss student: expected (V * {n}, K), got "
                    f"{tuple(student_logits.shape)}"
                )
            student = _views(
                student_logits, "DINOLoss student", student_logits.shape[0] // n
            )
        v = student.shape[0]
        if student.shape[1:] != (n, k) or k != self.out_dim:
            raise ValueError(
                f"DINOLoss: student views {tuple(student.shape[1:])} and teacher views "
                f"{(n, k)} must match and K must be out_dim={self.out_dim}"
            )
        if g != self.n_global or v < max(g, 2):
            raise ValueError(
                f"DINOLoss: need {self.n_global} teacher views and at least as many "
                f"student views (with at least one pair i != j), got G={g}, V={v}"
            )
        if n < 2 and self.training:
            raise ValueError("DINOLoss needs a batch of at least 2 samples")

        tau_t = self.teacher_temperature(epoch)
        log_p_s = F.log_softmax(student / self.student_temp, dim=-1)  # (V, N, K)
        p_t = F.softmax((teacher - self.center) / tau_t, dim=-1)  # (G, N, K)
        # ce[j, i] = batch mean of -sum_k p_t[j] log p_s[i]
        ce = -torch.einsum("jnk,ink->ji", p_t, log_p_s) / n  # (G, V)
        mask = ~torch.eye(g, v, dtype=torch.bool, device=ce.device)  # i != j
        loss = ce[mask].mean()

        with torch.no_grad():
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-30))).sum(-1).mean()
            self.last_metrics = {
                "teacher_entropy": entropy,
                "kl_div": loss.detach() - entropy,
                "teacher_std": p_t.reshape(g * n, k).std(dim=0).mean(),
                "teacher_temp": torch.tensor(tau_t),
            }
        if self.training:
            self.update_center(teacher.reshape(g * n, k))
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits):
        """``c <- m c + (1 - m) mean(teacher_logits)``, mean over the global batch.

        Arguments
        ---------
        teacher_logits : torch.Tensor
            ``(G * N, K)`` raw teacher logits of this rank (every rank passes the same
            number of rows, so the mean of the per-rank means is the global mean).
        """
        batch_center = teacher_logits.detach().float().mean(dim=0, keepdim=True)
        batch_center = all_reduce_mean(batch_center)  # (1, K)
        self.center.mul_(self.center_momentum).add_(
            batch_center * (1 - self.center_momentum)
        )
