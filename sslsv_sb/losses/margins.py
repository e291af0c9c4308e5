"""Margins on the positive logit of contrastive losses (NT-Xent-AM family).

Lepage & Dehak, "Additive Margin in Contrastive Self-Supervised Frameworks to Learn
Discriminative Speaker Representations" (arXiv 2404.14913; first version arXiv
2306.03664) add the large-margin penalties of face recognition to the *positive*
logit of NT-Xent (SimCLR) and InfoNCE (MoCo). This module provides

* ``PositiveMargin``: one module for every margin type, with the stateful ones
  (CurricularFace ``t``, AdaFace norm statistics) kept in registered buffers, a
  learnable margin, the SIMO automatic margin and a margin-ramp factor that **every**
  type honours (the per-type logit functions and the margin value live in
  ``sslsv_sb.losses.margin_logits``);
* ``MarginNTXentLoss``: NT-Xent with margins, multi-positive (SimCLR multi-views) and
  symmetric (SimCLR) modes, negatives gathered across ranks.

Differences from sslsv (see docs/sslsv_inventory.md section 9):

* MagFace / AdaFace always receive the norms of the *un-normalised* anchors (the losses
  take raw embeddings and normalise internally), also in MoCo (sslsv normalises MoCo
  queries first, so the "norms" are all 1 and both margins degenerate).
* The margin schedule is a factor applied inside ``PositiveMargin``, so CurricularFace,
  MagFace and AdaFace follow it too (sslsv only updates CosFace/ArcFace/SphereFace).
* SphereFace uses the true gradient of psi(theta) by default (sslsv back-propagates
  the plain cosine: ``sphereface_straight_through=True``) and accepts sslsv's
  ``0 < m < 1`` configs (``cos(m theta)``, see ``sphereface_logit``); multi-positive
  rows get the margin on every positive column (sslsv's
  SphereFace / CurricularFace only touch column 0).
* sslsv's ArcFace constructor swaps ``margin_simo_K`` and ``margin_simo_alpha``
  (its SIMO margin is then negative); here both are keyword-only.
* Stateful EMAs (CurricularFace ``t``, AdaFace mean/std) are only updated in training
  mode and use statistics reduced over all ranks, so every rank keeps the same buffers.
"""

import math

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb import distributed as dist_utils
from sslsv_sb.losses.margin_logits import (
    ScheduledMargin,
    adaface_logit,
    adaface_scaler,
    arcface_logit,
    cosface_logit,
    curricularface_logits,
    ema_,
    magface_margin,
    magface_regularizer,
    sphereface_logit,
)


class PositiveMargin(ScheduledMargin):
    """Margin applied to the positive cosines of a contrastive loss (arXiv 2404.14913).

    Types (logit functions in ``sslsv_sb.losses.margin_logits``):

    * ``none``;
    * ``cosface``: ``c - m`` (arXiv 1801.09414);
    * ``arcface``: ``cos(theta + m)`` (arXiv 1801.07698);
    * ``sphereface``: ``psi(theta)``, multiplicative ``m > 0`` (arXiv 1704.08063);
    * ``curricularface``: ArcFace positive; hard negatives ``n > cos(theta + m)``
      become ``n (t + n)``, ``t`` an EMA of the mean positive cosine
      (arXiv 2004.00288);
    * ``magface``: ArcFace with a per-anchor ``m(a)`` from the raw norm ``a``, optional
      ``lambda_g g(a)`` (arXiv 2103.06627);
    * ``adaface``: norm-adaptive angular + additive margin, EMA batch norm mean/std
      (arXiv 2204.00964).

    The margin value, its learnable / SIMO variants and the ramp factor come from
    ``ScheduledMargin`` (``set_margin``, ``set_margin_factor``, ``update_margin``,
    ``effective_margin``).

    Arguments
    ---------
    margin_type : str
        One of ``MARGIN_TYPES``.
    margin : float
        ``m`` (CosFace / ArcFace / CurricularFace / AdaFace: additive, 0.1 default;
        SphereFace: multiplicative ``m > 0``, 1 = none; unused by MagFace).
    margin_learnable, margin_simo, simo_K, simo_alpha, scale :
        Margin value options, see ``ScheduledMargin`` (``simo_alpha`` 65536,
        ``scale`` the logit scale of the owning loss, 1 / 0.03).
    magface_l_margin, magface_u_margin, magface_l_a, magface_u_a, magface_lambda_g :
        MagFace ``l_m=0.01, u_m=0.05, l_a=10, u_a=110, lambda_g=0`` (sslsv defaults).
    adaface_h : float
        AdaFace ``h`` (0.333).
    ema_momentum : float
        Weight of the new batch in the CurricularFace / AdaFace EMAs (0.01).
    sphereface_straight_through : bool
        SphereFace: back-propagate the plain cosine instead of ``psi`` (sslsv).

    Example
    -------
    >>> pm = PositiveMargin("cosface", margin=0.2)
    >>> pos, neg, reg = pm(torch.tensor([[0.5]]), torch.tensor([[0.1, 0.2]]))
    >>> round(pos.item(), 4)
    0.3
    """

    def __init__(
        self,
        margin_type="none",
        margin=0.1,
        *,
        margin_learnable=False,
        margin_simo=False,
        simo_K=None,
        simo_alpha=65536.0,
        scale=1.0 / 0.03,
        magface_l_margin=0.01,
        magface_u_margin=0.05,
        magface_l_a=10.0,
        magface_u_a=110.0,
        magface_lambda_g=0.0,
        adaface_h=0.333,
        ema_momentum=0.01,
        sphereface_straight_through=False,
    ):
        super().__init__(
            margin_type,
            margin,
            margin_learnable=margin_learnable,
            margin_simo=margin_simo,
            simo_K=simo_K,
            simo_alpha=simo_alpha,
            scale=scale,
        )
        if magface_u_a <= magface_l_a:
            raise ValueError("magface_u_a must be > magface_l_a")
        self.mag = (
            float(magface_l_a),
            float(magface_u_a),
            float(magface_l_margin),
            float(magface_u_margin),
        )
        self.magface_lambda_g = float(magface_lambda_g)
        self.adaface_h = float(adaface_h)
        self.ema_momentum = float(ema_momentum)
        self.sphereface_straight_through = bool(sphereface_straight_through)
        self.stats = {}
        if margin_type == "curricularface":
            self.register_buffer("t", torch.zeros(()))
        if margin_type == "adaface":
            self.register_buffer("batch_mean", torch.tensor(20.0))
            self.register_buffer("batch_std", torch.tensor(100.0))

    def forward(self, pos, neg, norms=None):
        """Apply the margin.

        Arguments
        ---------
        pos : torch.Tensor
            ``(R, P)`` positive cosines (``P`` positives per anchor row).
        neg : torch.Tensor
            ``(R, K)`` negative cosines.
        norms : torch.Tensor or None
            ``(R,)`` norms of the **un-normalised** anchors (MagFace, AdaFace).

        Returns
        -------
        tuple
            ``(pos', neg', reg)``: processed positive ``(R, P)`` and negative ``(R, K)``
            cosine-like logits (not scaled) and a scalar regulariser to add to the loss.
        """
        pos = pos.float()
        neg = neg.float()
        reg = pos.new_zeros(())
        self.stats = {}
        mt = self.margin_type
        if mt == "none":
            return pos, neg, reg
        if mt in ("magface", "adaface"):
            if norms is None or norms.shape != pos.shape[:1]:
                raise ValueError(
                    f"{mt} needs the (R,) norms of the un-normalised anchors, got "
                    f"{None if norms is None else tuple(norms.shape)}, "
                    f"R={pos.shape[0]}"
                )
            norms = norms.float()
        m = self.effective_margin(neg.shape[1])
        if mt == "cosface":
            return cosface_logit(pos, m), neg, reg
        if mt == "arcface":
            return arcface_logit(pos, m), neg, reg
        if mt == "sphereface":
            st = self.sphereface_straight_through
            return sphereface_logit(pos, m, st), neg, reg
        if mt == "curricularface":
            return self._curricular(pos, neg, m)
        if mt == "magface":
            return self._magface(pos, neg, norms, m)
        return self._adaface(pos, neg, norms, m)

    def _curricular(self, pos, neg, m):
        """CurricularFace on ``(R, P)`` / ``(R, K)``; ``t`` updated in training mode."""
        if self.training:
            mean_pos = dist_utils.all_reduce_mean(pos.detach().mean())
            ema_(self.t, mean_pos, self.ema_momentum)
        pos, neg, hard = curricularface_logits(pos, neg, m, self.t)
        self.stats = {
            "curricular_t": float(self.t),
            "hard_negatives": hard.float().mean().item(),
        }
        return pos, neg, pos.new_zeros(())

    def _magface(self, pos, neg, norms, factor):
        """MagFace: ArcFace with the per-anchor ``factor * m(a)``, optional ``g(a)``."""
        l_a, u_a, l_m, u_m = self.mag
        m_a, a = magface_margin(norms, l_a, u_a, l_m, u_m)  # (R,)
        m_a = factor * m_a
        self.stats = {"magface_margin": m_a.detach().mean().item()}
        reg = pos.new_zeros(())
        if self.magface_lambda_g > 0:
            reg = self.magface_lambda_g * magface_regularizer(a, u_a)
        return arcface_logit(pos, m_a[:, None]), neg, reg

    def _adaface(self, pos, neg, norms, m):
        """AdaFace: scaler from detached norms; statistics updated in training mode."""
        eps = 1e-3
        if self.training:
            with torch.no_grad():
                safe = norms.detach().clamp(0.001, 100.0)
                allnorms = dist_utils.gather(safe, grad=False)
                ema_(self.batch_mean, allnorms.mean(), self.ema_momentum)
                ema_(self.batch_std, allnorms.std(), self.ema_momentum)
        scaler = adaface_scaler(
            norms, self.batch_mean, self.batch_std, self.adaface_h, eps
        )
        self.stats = {
            "adaface_mean": float(self.batch_mean),
            "adaface_std": float(self.batch_std),
        }
        return adaface_logit(pos, scaler, m, eps), neg, pos.new_zeros(())


def build_margin(spec, scale):
    """Build a ``PositiveMargin`` from a spec.

    Arguments
    ---------
    spec : None, str, dict or PositiveMargin
        None -> no margin; str -> margin type with defaults; dict -> keyword arguments
        of ``PositiveMargin`` (``margin_type`` key required); an instance is returned
        as is (its ``scale`` must equal ``scale`` when it uses SIMO).
    scale : float
        Logit scale of the owning loss.

    Returns
    -------
    PositiveMargin
    """
    if spec is None:
        return PositiveMargin("none", scale=scale)
    if isinstance(spec, PositiveMargin):
        if spec.margin_simo and not math.isclose(spec.scale, scale, rel_tol=1e-6):
            raise ValueError(
                f"PositiveMargin uses SIMO with scale {spec.scale} but the loss uses "
                f"scale {scale}"
            )
        return spec
    if isinstance(spec, str):
        return PositiveMargin(spec, scale=scale)
    if isinstance(spec, dict):
        spec = dict(spec)
        if "margin_type" not in spec:
            raise ValueError(f"margin spec dict needs a 'margin_type' key, got {spec}")
        margin_type = spec.pop("margin_type")
        margin = spec.pop("margin", 0.1)
        return PositiveMargin(margin_type, margin, scale=scale, **spec)
    raise ValueError(f"Unsupported margin spec {spec!r}")


class MarginNTXentLoss(nn.Module):
    """NT-Xent with margins on the positive logits, NT-Xent-AM (arXiv 2404.14913).

    Anchors ``a`` and candidates ``c`` are L2-normalised internally (the raw anchor
    norms feed MagFace / AdaFace); logits are ``scale * cos`` (SimCLR arXiv 2002.05709
    with ``tau = 1 / scale``). For anchor view ``(n, v)``:

    * positives: every candidate view of the same sample ``n`` (multi-positive, e.g.
      SimCLR multi-views with local crops as anchors and the 2 global views as
      candidates), minus the anchor itself in shared mode;
    * negatives: every candidate of every other sample of the **global** batch
      (candidates all-gathered with gradient via ``sslsv_sb.distributed.gather``);
    * target: uniform over the positive columns (multi-hot / P), so the row loss is
      the mean over positives of ``-log softmax``; ``P = 1`` is plain NT-Xent.

    Computed in fp32 with autocast disabled (SpeechBrain ``fwd_default_precision``).
    ``W`` below is the world size.

    Shared (symmetric SimCLR) mode: ``candidates`` is None or the same object as
    ``anchors``. With ``symmetric=True`` every view is an anchor against all views
    (self-similarity excluded; V = 2 gives SimCLR's ``2N`` rows with ``2(NW - 1)``
    negatives); with ``symmetric=False`` only view 0 anchors against view 1 (one
    positive, ``NW - 1`` negatives).

    Arguments
    ---------
    margin_type : str
        See ``MARGIN_TYPES`` / ``PositiveMargin``.
    scale : float
        ``s = 1 / tau`` (1 / 0.03).
    margin : float
        Margin ``m`` (0.1).
    symmetric : bool
        Shared mode: all views as anchors (True) or view 0 -> view 1 (False).
    **margin_kwargs
        Other ``PositiveMargin`` options (``margin_learnable``, ``margin_simo``,
        ``simo_K`` (None = negatives per anchor), ``simo_alpha``, ``magface_*``,
        ``adaface_h``, ``ema_momentum``).

    Example
    -------
    >>> loss_fn = MarginNTXentLoss("arcface", margin=0.1)
    >>> z = torch.randn(4, 2, 8)
    >>> loss = loss_fn(z, z)
    >>> loss.shape, sorted(loss_fn.last_metrics)[:2]
    (torch.Size([]), ['accuracy', 'loss'])
    """

    def __init__(
        self,
        margin_type="none",
        scale=1.0 / 0.03,
        margin=0.1,
        symmetric=True,
        **margin_kwargs,
    ):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.symmetric = symmetric
        self.margin_fn = PositiveMargin(
            margin_type, margin, scale=scale, **margin_kwargs
        )
        self.last_metrics = {}

    def update_margin(self, epoch, total_epochs):
        """Cosine margin ramp (``cosine_margin_schedule``, epoch from 0)."""
        return self.margin_fn.update_margin(epoch, total_epochs)

    def set_margin_factor(self, factor):
        """Multiply the margin by ``factor`` in ``[0, 1]`` (every margin type)."""
        self.margin_fn.set_margin_factor(factor)

    @staticmethod
    def _check(anchors, candidates):
        if anchors.dim() != 3:
            raise ValueError(
                f"anchors must be (N, V_a, D), got shape {tuple(anchors.shape)}"
            )
        if candidates.dim() != 3:
            raise ValueError(
                f"candidates must be (N, V_c, D), got shape {tuple(candidates.shape)}"
            )
        if (
            anchors.shape[0] != candidates.shape[0]
            or anchors.shape[2] != candidates.shape[2]
        ):
            raise ValueError(
                f"anchors {tuple(anchors.shape)} and candidates "
                f"{tuple(candidates.shape)} must share N and D"
            )
        if anchors.shape[0] < 2:
            raise ValueError(
                "MarginNTXentLoss needs a batch of >= 2 samples (negatives come from "
                f"other samples), got N={anchors.shape[0]}"
            )
        if anchors.shape[1] < 1 or candidates.shape[1] < 1:
            raise ValueError("anchors and candidates need at least one view")

    def forward(self, anchors, candidates=None):
        """Compute the loss.

        Arguments
        ---------
        anchors : torch.Tensor
            ``(N, V_a, D)`` un-normalised anchor embeddings (local batch).
        candidates : torch.Tensor or None
            ``(N, V_c, D)`` un-normalised candidates; None or ``anchors`` itself for
            the shared (symmetric SimCLR) mode.

        Returns
        -------
        torch.Tensor
            Scalar loss (mean over local anchor rows, + MagFace regulariser).
        """
        # decide the mode before the fp32 cast (casting would break ``is``)
        shared = candidates is None or candidates is anchors
        return self._forward(anchors, None if shared else candidates)

    @fwd_default_precision(cast_inputs=torch.float32)
    def _forward(self, anchors, candidates):
        """``forward`` in fp32 with autocast disabled; ``candidates`` None = shared."""
        shared = candidates is None
        if candidates is None:
            candidates = anchors
        self._check(anchors, candidates)
        if shared:
            if anchors.shape[1] < 2:
                raise ValueError(
                    "shared (symmetric) mode needs >= 2 views per sample, got "
                    f"{tuple(anchors.shape)}"
                )
            if not self.symmetric:
                anchors, candidates, shared = anchors[:, :1], anchors[:, 1:2], False

        N, Va, D = anchors.shape
        Vc = candidates.shape[1]
        rank, world = dist_utils.rank(), dist_utils.world_size()

        A = anchors.float()
        norms = A.norm(dim=-1).reshape(N * Va)  # (N*Va,), row = n*Va + v
        a = F.normalize(A, dim=-1).reshape(N * Va, D)  # (N*Va, D)
        if shared:
            c = a
        else:
            c = F.normalize(candidates.float(), dim=-1).reshape(N * Vc, D)  # (N*Vc, D)
        c_all = dist_utils.gather(c)  # (W*N*Vc, D), column = (r*N + n)*Vc + v
        cos = a @ c_all.t()  # (N*Va, W*N*Vc)

        dev = cos.device
        rows = torch.arange(N * Va, device=dev)
        cols = torch.arange(c_all.shape[0], device=dev)
        row_sample = rank * N + rows // Va
        col_sample = cols // Vc
        pos_mask = row_sample[:, None] == col_sample[None, :]  # (N*Va, W*N*Vc)
        neg_mask = ~pos_mask
        if shared:
            self_mask = cols[None, :] == (rank * N * Va + rows)[:, None]
            pos_mask = pos_mask & ~self_mask
        R = N * Va
        P = Vc - 1 if shared else Vc
        K = Vc * (N * world - 1)
        pos = cos[pos_mask].view(R, P)  # (R, P)
        neg = cos[neg_mask].view(R, K)  # (R, K)

        pos_l, neg_l, reg = self.margin_fn(pos, neg, norms)
        logits = self.scale * torch.cat([pos_l, neg_l], dim=1)  # (R, P + K)
        log_prob = F.log_softmax(logits, dim=1)
        loss = -log_prob[:, :P].mean(dim=1).mean() + reg

        with torch.no_grad():
            acc = (logits.argmax(dim=1) < P).float().mean()
            self.last_metrics = {
                "loss": loss.detach(),
                "accuracy": acc,
                # MagFace: mean of the per-anchor margins m(a)
                "margin": self.margin_fn.stats.get(
                    "magface_margin", float(self.margin_fn.effective_margin(K))
                ),
                "pos_cos": pos.detach().mean(),
                "neg_cos": neg.detach().mean(),
                "norm": norms.detach().mean(),
                **self.margin_fn.stats,
            }
            if reg.requires_grad or float(reg) != 0.0:
                self.last_metrics["reg"] = float(reg)
        return loss
