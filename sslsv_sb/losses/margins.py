"""Margins on the positive logit of contrastive losses (NT-Xent-AM family).

Lepage & Dehak, "Additive Margin in Contrastive Self-Supervised Frameworks to Learn
Discriminative Speaker Representations" (arXiv 2404.14913; first version arXiv
2306.03664) add the large-margin penalties of face recognition to the *positive*
logit of NT-Xent (SimCLR) and InfoNCE (MoCo). This module provides

* functional margins on cosines (``cosface_logit``, ``arcface_logit``,
  ``sphereface_logit``, ``magface_margin``, ``adaface_logit``);
* ``PositiveMargin``: one module for every margin type, with the stateful ones
  (CurricularFace ``t``, AdaFace norm statistics) kept in registered buffers, a
  learnable margin, the SIMO automatic margin and a margin-ramp factor that **every**
  type honours;
* ``MarginNTXentLoss``: NT-Xent with margins, multi-positive (SimCLR multi-views) and
  symmetric (SimCLR) modes, negatives gathered across ranks;
* ``cosine_margin_schedule``: the cosine 0 -> m ramp over the first half of training.

Differences from sslsv (see docs/sslsv_inventory.md section 9):

* MagFace / AdaFace always receive the norms of the *un-normalised* anchors (the losses
  take raw embeddings and normalise internally), also in MoCo (sslsv normalises MoCo
  queries first, so the "norms" are all 1 and both margins degenerate).
* The margin schedule is a factor applied inside ``PositiveMargin``, so CurricularFace,
  MagFace and AdaFace follow it too (sslsv only updates CosFace/ArcFace/SphereFace).
* SphereFace uses the true gradient of psi(theta) (sslsv back-propagates the plain
  cosine), and multi-positive rows get the margin on every positive column (sslsv's
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

MARGIN_TYPES = (
    "none",
    "cosface",
    "arcface",
    "sphereface",
    "curricularface",
    "magface",
    "adaface",
)

# Margin types whose margin is additive in cosine (or angle) units: SIMO applies,
# the schedule ramps them from 0.
_ADDITIVE = ("cosface", "arcface", "curricularface", "adaface")
_ACOS_EPS = 1e-6


def cosine_margin_schedule(epoch, total_epochs, margin):
    """Cosine ramp of a margin from 0 to ``margin`` over the first half of training.

    ``m_e = m * (1 - cos(pi * e / (E // 2))) / 2`` for ``e < E // 2``, then ``m``
    (the ``margin_scheduler`` of arXiv 2404.14913 / sslsv).

    Arguments
    ---------
    epoch : int
        Current epoch, counted **from 0** (pass ``epoch - 1`` with SpeechBrain's
        1-based epoch counter).
    total_epochs : int
        Number of training epochs ``E`` (>= 1).
    margin : float
        Final margin ``m``.

    Returns
    -------
    float
        The margin for this epoch.

    Example
    -------
    >>> cosine_margin_schedule(0, 10, 0.2), cosine_margin_schedule(5, 10, 0.2)
    (0.0, 0.2)
    """
    if total_epochs < 1 or epoch < 0:
        raise ValueError(
            f"cosine_margin_schedule needs epoch >= 0 and total_epochs >= 1, got "
            f"epoch={epoch}, total_epochs={total_epochs}"
        )
    half = total_epochs // 2
    if half == 0 or epoch >= half:
        return float(margin)
    return float(margin) * (1.0 - math.cos(math.pi * epoch / half)) / 2.0


def simo_margin(scale, alpha, n_negatives):
    """SIMO automatic additive margin ``m = ln(alpha / K) / scale``.

    This is the ``margin_simo`` option of the reference code of arXiv 2404.14913
    (sslsv ``NTXentCosFace``; I could not check the exact wording of its derivation in
    the paper text). Reading: subtracting ``m`` from the positive cosine multiplies the
    positive's softmax weight by ``exp(-scale * m) = K / alpha``, i.e. the positive
    competes against ``K`` negatives as hard as it would against ``alpha`` negatives
    without margin. ``alpha = 65536`` (MoCo's queue size), ``K`` = negatives per
    anchor; sslsv's default ``K = 510`` is ``2 * (256 - 1)``, symmetric SimCLR with a
    global batch of 256, giving ``m = 0.03 * ln(65536 / 510) ~ 0.146``.

    Arguments
    ---------
    scale : float
        Logit scale ``s = 1 / temperature``.
    alpha : float
        Target effective number of negatives.
    n_negatives : int
        ``K``, negatives per anchor.

    Returns
    -------
    float
        The margin (negative when ``K > alpha``).
    """
    if n_negatives < 1:
        raise ValueError(f"SIMO margin needs K >= 1 negatives, got {n_negatives}")
    return math.log(alpha / n_negatives) / scale


def _clamp_cos(cos):
    return cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS)


def cosface_logit(cos, margin):
    """CosFace / AM-softmax positive ``cos - m`` (arXiv 1801.09414)."""
    return cos - margin


def arcface_logit(cos, margin):
    """ArcFace positive ``cos(theta + m)`` (arXiv 1801.07698).

    Where ``theta + m > pi`` (``cos <= cos(pi - m)``) ``cos(theta + m)`` stops being
    monotonic in ``theta``; the reference implementation then uses the CosFace-like
    ``cos - m sin(pi - m)`` (no "easy margin"), as here.

    Arguments
    ---------
    cos : torch.Tensor
        Cosines, any shape.
    margin : float or torch.Tensor
        Angular margin, broadcastable to ``cos`` (per-row margins for MagFace).

    Returns
    -------
    torch.Tensor
        Same shape as ``cos``.
    """
    margin = torch.as_tensor(margin, dtype=cos.dtype, device=cos.device)
    cos = _clamp_cos(cos)
    sin = torch.sqrt(1.0 - cos * cos)
    phi = cos * torch.cos(margin) - sin * torch.sin(margin)
    threshold = torch.cos(math.pi - margin)
    fallback = cos - torch.sin(math.pi - margin) * margin
    return torch.where(cos > threshold, phi, fallback)


def sphereface_logit(cos, margin):
    """SphereFace multiplicative angular margin psi (arXiv 1704.08063).

    ``psi(theta) = (-1)^k cos(m theta) - 2k`` with ``k = floor(m theta / pi)``, the
    monotonic extension of ``cos(m theta)`` on ``[0, pi]``. Gradients flow through
    ``theta = acos(cos)`` (``cos`` clamped to ``+-(1 - 1e-6)``).

    Arguments
    ---------
    cos : torch.Tensor
        Cosines, any shape.
    margin : float or torch.Tensor
        Multiplicative margin ``m >= 1`` (``m = 1``: no margin).

    Returns
    -------
    torch.Tensor
        Same shape as ``cos``.
    """
    theta = torch.acos(_clamp_cos(cos))
    m_theta = margin * theta
    k = torch.floor(m_theta.detach() / math.pi)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * torch.cos(m_theta) - 2.0 * k


def magface_margin(norms, l_a=10.0, u_a=110.0, l_margin=0.01, u_margin=0.05):
    """MagFace magnitude-aware margin ``m(a)`` (arXiv 2103.06627).

    ``a`` = norm of the un-normalised embedding clipped to ``[l_a, u_a]``;
    ``m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m`` (linear, increasing).

    Arguments
    ---------
    norms : torch.Tensor
        ``(R,)`` raw embedding norms (differentiable).
    l_a, u_a : float
        Norm bounds.
    l_margin, u_margin : float
        Margins at ``l_a`` and ``u_a``.

    Returns
    -------
    tuple of torch.Tensor
        ``(m, a)``: margins ``(R,)`` and clipped norms ``(R,)``.
    """
    a = norms.clamp(l_a, u_a)
    return (u_margin - l_margin) / (u_a - l_a) * (a - l_a) + l_margin, a


def magface_regularizer(a, u_a=110.0):
    """MagFace ``g(a) = a / u_a^2 + 1 / a`` averaged over rows (arXiv 2103.06627)."""
    return (a / (u_a**2) + 1.0 / a).mean()


def adaface_logit(cos, margin_scaler, margin, eps=1e-3):
    """AdaFace norm-adaptive positive logit (arXiv 2204.00964).

    With ``s`` the margin scaler in ``[-1, 1]`` (high-norm = "easy" sample -> s > 0):
    ``theta' = clip(theta - m s, eps, pi - eps)`` (angular part ``g_angle = -m s``),
    logit ``cos(theta') - (m + m s)`` (additive part ``g_add = m s + m``).

    Arguments
    ---------
    cos : torch.Tensor
        ``(R, P)`` positive cosines.
    margin_scaler : torch.Tensor
        ``(R, 1)`` scalers (no gradient).
    margin : float or torch.Tensor
        ``m``.
    eps : float
        Angle clipping.

    Returns
    -------
    torch.Tensor
        ``(R, P)``.
    """
    theta = torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))
    theta_m = torch.clamp(theta - margin * margin_scaler, eps, math.pi - eps)
    return torch.cos(theta_m) - (margin + margin * margin_scaler)


class PositiveMargin(nn.Module):
    """Margin applied to the positive cosines of a contrastive loss (arXiv 2404.14913).

    Types:

    * ``none``;
    * ``cosface``: ``c - m`` (arXiv 1801.09414);
    * ``arcface``: ``cos(theta + m)`` (arXiv 1801.07698);
    * ``sphereface``: ``psi(theta)``, multiplicative ``m >= 1`` (arXiv 1704.08063);
    * ``curricularface``: ArcFace positive; hard negatives ``n > cos(theta + m)``
      become ``n (t + n)``, ``t`` an EMA of the mean positive cosine
      (arXiv 2004.00288);
    * ``magface``: ArcFace with a per-anchor ``m(a)`` from the raw norm ``a``, optional
      ``lambda_g g(a)`` (arXiv 2103.06627);
    * ``adaface``: norm-adaptive angular + additive margin, EMA batch norm mean/std
      (arXiv 2204.00964).

    The effective margin is ``factor * m`` for additive types (``factor * m(a)`` for
    MagFace, ``1 + factor (m - 1)`` for SphereFace); ``factor`` is a buffer set by
    ``set_margin_factor`` / ``update_margin`` (the cosine ramp), 1 by default.

    Arguments
    ---------
    margin_type : str
        One of ``MARGIN_TYPES``.
    margin : float
        ``m`` (CosFace / ArcFace / CurricularFace / AdaFace: additive, 0.1 default;
        SphereFace: multiplicative, must be >= 1; unused by MagFace).
    margin_learnable : bool
        Make ``m`` an ``nn.Parameter`` (not for MagFace / none).
    margin_simo : bool
        Use the SIMO margin ``ln(alpha / K) / scale`` (``simo_margin``) instead of
        ``margin`` (CosFace / ArcFace / CurricularFace / AdaFace).
    simo_K : int or None
        ``K``; None = number of negatives per anchor seen at forward time.
    simo_alpha : float
        ``alpha`` (65536).
    scale : float
        Logit scale of the owning loss (only used by SIMO).
    magface_l_margin, magface_u_margin, magface_l_a, magface_u_a, magface_lambda_g :
        MagFace ``l_m=0.01, u_m=0.05, l_a=10, u_a=110, lambda_g=0`` (sslsv defaults).
    adaface_h : float
        AdaFace ``h`` (0.333).
    ema_momentum : float
        Weight of the new batch in the CurricularFace / AdaFace EMAs (0.01).

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
    ):
        super().__init__()
        if margin_type not in MARGIN_TYPES:
            raise ValueError(
                f"margin_type must be one of {MARGIN_TYPES}, got {margin_type!r}"
            )
        if margin_type == "sphereface" and margin < 1.0:
            raise ValueError(
                f"sphereface uses a multiplicative angular margin m >= 1 (m = 1 is no "
                f"margin), got margin={margin}"
            )
        if margin_simo and margin_type not in _ADDITIVE:
            raise ValueError(
                f"margin_simo needs an additive margin type {_ADDITIVE}, got "
                f"{margin_type!r}"
            )
        if margin_learnable and margin_type in ("none", "magface"):
            raise ValueError(f"margin_learnable is meaningless for {margin_type!r}")
        if margin_simo and simo_K is None and margin_learnable:
            raise ValueError(
                "margin_simo with margin_learnable needs an explicit simo_K"
            )
        if magface_u_a <= magface_l_a:
            raise ValueError("magface_u_a must be > magface_l_a")
        self.margin_type = margin_type
        self.scale = float(scale)
        self.margin_simo = margin_simo
        self.simo_K = simo_K
        self.simo_alpha = float(simo_alpha)
        self.mag = (
            float(magface_l_a),
            float(magface_u_a),
            float(magface_l_margin),
            float(magface_u_margin),
        )
        self.magface_lambda_g = float(magface_lambda_g)
        self.adaface_h = float(adaface_h)
        self.ema_momentum = float(ema_momentum)

        if margin_simo and simo_K is not None:
            margin = simo_margin(self.scale, self.simo_alpha, simo_K)
        m = torch.tensor(float(margin))
        if margin_learnable:
            self.margin = nn.Parameter(m)
        else:
            self.register_buffer("margin", m)
        self.register_buffer("margin_factor", torch.tensor(1.0))
        self.stats = {}
        if margin_type == "curricularface":
            self.register_buffer("t", torch.zeros(()))
        if margin_type == "adaface":
            self.register_buffer("batch_mean", torch.tensor(20.0))
            self.register_buffer("batch_std", torch.tensor(100.0))

    # ------------------------------------------------------------------ margin value
    def set_margin(self, value):
        """Set the base margin ``m`` (in place; keeps a learnable parameter)."""
        with torch.no_grad():
            self.margin.fill_(float(value))

    def set_margin_factor(self, factor):
        """Set the ramp factor in ``[0, 1]`` multiplying the margin (see class doc)."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"margin factor must be in [0, 1], got {factor}")
        self.margin_factor.fill_(float(factor))

    def update_margin(self, epoch, total_epochs):
        """Apply ``cosine_margin_schedule`` (epoch from 0); returns the factor."""
        factor = cosine_margin_schedule(epoch, total_epochs, 1.0)
        self.set_margin_factor(factor)
        return factor

    def base_margin(self, n_negatives=None):
        """Un-ramped margin ``m`` (tensor; SIMO with runtime ``K`` when needed)."""
        if self.margin_simo and self.simo_K is None:
            if n_negatives is None:
                raise ValueError("SIMO margin with simo_K=None needs n_negatives")
            return self.margin.new_tensor(
                simo_margin(self.scale, self.simo_alpha, n_negatives)
            )
        return self.margin

    def effective_margin(self, n_negatives=None):
        """Margin actually applied (tensor): ramp factor included.

        For MagFace the factor multiplying ``m(a)`` is returned.
        """
        f = self.margin_factor
        if self.margin_type == "none":
            return f.new_zeros(())
        if self.margin_type == "magface":
            return f
        m = self.base_margin(n_negatives)
        if self.margin_type == "sphereface":
            return 1.0 + f * (m - 1.0)
        return f * m

    # ------------------------------------------------------------------ forward
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
            return sphereface_logit(pos, m), neg, reg
        if mt == "curricularface":
            return self._curricular(pos, neg, m)
        if mt == "magface":
            l_a, u_a, l_m, u_m = self.mag
            m_a, a = magface_margin(norms, l_a, u_a, l_m, u_m)  # (R,)
            m_a = m * m_a
            self.stats = {"magface_margin": m_a.detach().mean().item()}
            if self.magface_lambda_g > 0:
                reg = self.magface_lambda_g * magface_regularizer(a, u_a)
            return arcface_logit(pos, m_a[:, None]), neg, reg
        return self._adaface(pos, neg, norms, m)

    def _curricular(self, pos, neg, m):
        """CurricularFace (arXiv 2004.00288) on ``(R, P)`` positives / ``(R, K)``."""
        if self.training:
            with torch.no_grad():
                mean_pos = dist_utils.all_reduce_mean(pos.detach().mean())
                self.t.mul_(1.0 - self.ema_momentum).add_(self.ema_momentum * mean_pos)
        c = _clamp_cos(pos)
        # raw cos(theta + m) (before the theta + m > pi fallback), as the reference
        phi_raw = c * torch.cos(m) - torch.sqrt(1.0 - c * c) * torch.sin(m)
        # a negative is "hard" when it beats the margined positive; with several
        # positives per row, when it beats at least one of them (min over P)
        threshold = phi_raw.detach().min(dim=1, keepdim=True).values  # (R, 1)
        hard = neg > threshold
        t = self.t.detach()
        neg = torch.where(hard, neg * (t + neg), neg)
        self.stats = {
            "curricular_t": float(self.t),
            "hard_negatives": hard.float().mean().item(),
        }
        return arcface_logit(pos, m), neg, pos.new_zeros(())

    def _adaface(self, pos, neg, norms, m):
        """AdaFace (arXiv 2204.00964): norms detached, EMA batch statistics."""
        eps = 1e-3
        safe = norms.detach().clamp(0.001, 100.0)  # (R,)
        if self.training:
            with torch.no_grad():
                allnorms = dist_utils.gather(safe, grad=False)
                mu, sd = allnorms.mean(), allnorms.std()
                a = self.ema_momentum
                self.batch_mean.mul_(1.0 - a).add_(a * mu)
                self.batch_std.mul_(1.0 - a).add_(a * sd)
        scaler = (safe - self.batch_mean) / (self.batch_std + eps) * self.adaface_h
        scaler = scaler.clamp(-1.0, 1.0)[:, None]  # (R, 1)
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
                "loss": loss.detach().item(),
                "accuracy": acc.item(),
                # MagFace: mean of the per-anchor margins m(a)
                "margin": self.margin_fn.stats.get(
                    "magface_margin", float(self.margin_fn.effective_margin(K))
                ),
                "pos_cos": pos.detach().mean().item(),
                "neg_cos": neg.detach().mean().item(),
                "norm": norms.detach().mean().item(),
                **self.margin_fn.stats,
            }
            if reg.requires_grad or float(reg) != 0.0:
                self.last_metrics["reg"] = float(reg)
        return loss
