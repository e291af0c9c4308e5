"""Margin transforms of positive cosines: the pieces ``PositiveMargin`` combines.

Lepage & Dehak, "Additive Margin in Contrastive Self-Supervised Frameworks to Learn
Discriminative Speaker Representations" (arXiv 2404.14913; first version arXiv
2306.03664) move the large-margin penalties of face recognition onto the positive
logit of contrastive losses. This module holds

* the per-type logit functions on cosines: ``cosface_logit`` (arXiv 1801.09414),
  ``arcface_logit`` (arXiv 1801.07698), ``sphereface_logit`` (arXiv 1704.08063),
  ``curricularface_logits`` (arXiv 2004.00288), ``magface_margin`` /
  ``magface_regularizer`` (arXiv 2103.06627), ``adaface_scaler`` / ``adaface_logit``
  (arXiv 2204.00964);
* the margin value: ``ScheduledMargin`` (fixed, learnable or SIMO ``m`` times a ramp
  factor), ``simo_margin`` and the ``cosine_margin_schedule`` ramp.

``sslsv_sb.losses.margins.PositiveMargin`` combines them per margin type.
"""

import math

import torch
from torch import nn

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
ADDITIVE_TYPES = ("cosface", "arcface", "curricularface", "adaface")
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

    Example
    -------
    >>> round(simo_margin(1 / 0.03, 65536, 510), 3)
    0.146
    """
    if n_negatives < 1:
        raise ValueError(f"SIMO margin needs K >= 1 negatives, got {n_negatives}")
    return math.log(alpha / n_negatives) / scale


def clamp_cos(cos):
    """Clamp cosines to ``+-(1 - 1e-6)`` so ``acos`` and ``sqrt(1 - c^2)`` stay finite.

    Arguments
    ---------
    cos : torch.Tensor
        Cosines, any shape.

    Returns
    -------
    torch.Tensor
        Same shape as ``cos``.
    """
    return cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS)


def cosface_logit(cos, margin):
    """CosFace / AM-softmax positive ``cos - m`` (arXiv 1801.09414).

    Arguments
    ---------
    cos : torch.Tensor
        Cosines, any shape.
    margin : float or torch.Tensor
        Additive margin, broadcastable to ``cos``.

    Returns
    -------
    torch.Tensor
        Same shape as ``cos``.

    Example
    -------
    >>> cosface_logit(torch.tensor([0.5, 0.25]), 0.25)
    tensor([0.2500, 0.0000])
    """
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

    Example
    -------
    >>> round(arcface_logit(torch.tensor([0.0]), math.pi / 6).item(), 4)  # cos(2pi/3)
    -0.5
    """
    margin = torch.as_tensor(margin, dtype=cos.dtype, device=cos.device)
    cos = clamp_cos(cos)
    sin = torch.sqrt(1.0 - cos * cos)
    phi = cos * torch.cos(margin) - sin * torch.sin(margin)
    threshold = torch.cos(math.pi - margin)
    fallback = cos - torch.sin(math.pi - margin) * margin
    return torch.where(cos > threshold, phi, fallback)


def check_sphereface_margin(margin):
    """Reject a SphereFace margin outside its domain (``ValueError``).

    Arguments
    ---------
    margin : float
        Multiplicative angular margin ``m``.
    """
    if not 0.0 < margin < math.inf:
        raise ValueError(
            f"sphereface uses a multiplicative angular margin m > 0 in cos(m theta) "
            f"(m = 1 is no margin, m > 1 the paper's penalty, 0 < m < 1 sslsv's "
            f"m = 0.1 / 0.01 configs), got margin={margin}"
        )


def sphereface_logit(cos, margin, straight_through=False):
    """SphereFace multiplicative angular margin psi (arXiv 1704.08063).

    ``psi(theta) = (-1)^k cos(m theta) - 2k`` with ``k = floor(m theta / pi)``, the
    monotonic extension of ``cos(m theta)`` on ``[0, pi]``. Gradients flow through
    ``theta = acos(cos)`` (``cos`` clamped to ``+-(1 - 1e-6)``).

    The paper uses integer ``m >= 2`` (a penalty: ``psi(theta) <= cos(theta)``).
    Any ``m > 0`` is accepted: for ``0 < m < 1`` (sslsv's ``sphereface_m-0.1`` and
    ``sphereface_m-0.01`` SimCLR / MoCo configs) ``m theta < pi``, so ``k = 0`` and
    ``psi(theta) = cos(m theta) >= cos(theta)``: the positive logit is *raised*
    towards 1 (``cos(0.01 theta) >= 0.9995``), the opposite of a margin. The true
    gradient ``d psi / d cos = m sin(m theta) / sin(theta)`` is then about
    ``m^2 theta / sin(theta)``: the positive pulls roughly 60 (m = 0.1) to 6000
    (m = 0.01) times less than a plain cosine at ``theta = pi / 2``. sslsv keeps
    the gradient of the plain cosine (``straight_through=True``), so there the
    margin only changes the value.

    Arguments
    ---------
    cos : torch.Tensor
        Cosines, any shape.
    margin : float or torch.Tensor
        Multiplicative margin ``m > 0`` (``m = 1``: no margin).
    straight_through : bool
        Forward ``psi(theta)`` but back-propagate as the identity on ``cos``
        (sslsv's form: ``cos + (psi - cos).detach()``).

    Returns
    -------
    torch.Tensor
        Same shape as ``cos``.

    Example
    -------
    >>> sphereface_logit(torch.tensor([0.5]), 2.0)  # cos(2 pi / 3)
    tensor([-0.5000])
    >>> sphereface_logit(torch.tensor([0.0]), 0.5)  # cos(pi / 4): sslsv-style m < 1
    tensor([0.7071])
    """
    theta = torch.acos(clamp_cos(cos))
    m_theta = margin * theta
    k = torch.floor(m_theta.detach() / math.pi)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    psi = sign * torch.cos(m_theta) - 2.0 * k
    if straight_through:
        return cos + (psi - cos).detach()
    return psi


def curricularface_logits(pos, neg, margin, t):
    """CurricularFace: ArcFace positives, hard negatives re-weighted (arXiv 2004.00288).

    A negative ``n`` is hard when it beats the raw margined positive
    ``cos(theta + m)`` (taken before ArcFace's ``theta + m > pi`` fallback, as the
    reference); with several positives per row, when it beats at least one of them.
    Hard negatives become ``n (t + n)``.

    Arguments
    ---------
    pos : torch.Tensor
        ``(R, P)`` positive cosines.
    neg : torch.Tensor
        ``(R, K)`` negative cosines.
    margin : torch.Tensor
        Scalar angular margin ``m``.
    t : torch.Tensor
        Scalar EMA of the mean positive cosine (used without gradient).

    Returns
    -------
    tuple of torch.Tensor
        ``(pos', neg', hard)``: ``(R, P)`` and ``(R, K)`` logits and the ``(R, K)``
        boolean mask of hard negatives.

    Example
    -------
    >>> p, n, hard = curricularface_logits(
    ...     torch.tensor([[0.5]]), torch.tensor([[0.9, 0.1]]),
    ...     torch.tensor(0.1), torch.tensor(0.5))
    >>> hard.tolist(), [round(x, 2) for x in n[0].tolist()]
    ([[True, False]], [1.26, 0.1])
    """
    c = clamp_cos(pos)
    phi_raw = c * torch.cos(margin) - torch.sqrt(1.0 - c * c) * torch.sin(margin)
    threshold = phi_raw.detach().min(dim=1, keepdim=True).values  # (R, 1)
    hard = neg > threshold
    t = t.detach()
    return arcface_logit(pos, margin), torch.where(hard, neg * (t + neg), neg), hard


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

    Example
    -------
    >>> m, a = magface_margin(torch.tensor([5.0, 60.0]))
    >>> [round(x, 4) for x in m.tolist()], a.tolist()
    ([0.01, 0.03], [10.0, 60.0])
    """
    a = norms.clamp(l_a, u_a)
    return (u_margin - l_margin) / (u_a - l_a) * (a - l_a) + l_margin, a


def magface_regularizer(a, u_a=110.0):
    """MagFace ``g(a) = a / u_a^2 + 1 / a`` averaged over rows (arXiv 2103.06627).

    Arguments
    ---------
    a : torch.Tensor
        ``(R,)`` clipped norms (``magface_margin``).
    u_a : float
        Upper norm bound.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    return (a / (u_a**2) + 1.0 / a).mean()


def adaface_scaler(norms, batch_mean, batch_std, h, eps=1e-3):
    """AdaFace margin scaler from detached norms (arXiv 2204.00964).

    ``s = clip((a - mean) / (std + eps) * h, -1, 1)`` with ``a`` the norm clamped to
    ``[0.001, 100]``: high-norm ("easy") samples get ``s > 0``.

    Arguments
    ---------
    norms : torch.Tensor
        ``(R,)`` raw embedding norms (detached here).
    batch_mean, batch_std : torch.Tensor
        Scalar norm statistics (EMAs over batches).
    h : float
        Concentration ``h``.
    eps : float
        Added to the standard deviation.

    Returns
    -------
    torch.Tensor
        ``(R, 1)`` scalers in ``[-1, 1]``, no gradient.

    Example
    -------
    >>> s = adaface_scaler(torch.tensor([20.0, 1e4]), torch.tensor(20.0),
    ...                    torch.tensor(1.0), 0.5)
    >>> s.shape, s.flatten().tolist()
    (torch.Size([2, 1]), [0.0, 1.0])
    """
    safe = norms.detach().clamp(0.001, 100.0)
    scaler = (safe - batch_mean) / (batch_std + eps) * h
    return scaler.clamp(-1.0, 1.0)[:, None]


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

    Example
    -------
    >>> adaface_logit(torch.tensor([[0.5]]), torch.zeros(1, 1), 0.25)  # CosFace-like
    tensor([[0.2500]])
    """
    theta = torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))
    theta_m = torch.clamp(theta - margin * margin_scaler, eps, math.pi - eps)
    return torch.cos(theta_m) - (margin + margin * margin_scaler)


def ema_(buffer, value, momentum):
    """In-place EMA ``buffer <- (1 - momentum) buffer + momentum value``, no gradient.

    Arguments
    ---------
    buffer : torch.Tensor
        Scalar buffer updated in place.
    value : torch.Tensor or float
        New observation.
    momentum : float
        Weight of the new observation.

    Example
    -------
    >>> b = torch.tensor(1.0)
    >>> ema_(b, 3.0, 0.25)
    >>> b
    tensor(1.5000)
    """
    with torch.no_grad():
        buffer.mul_(1.0 - momentum).add_(momentum * value)


class ScheduledMargin(nn.Module):
    """Margin value ``m`` of a positive-logit margin and its ramp (arXiv 2404.14913).

    ``m`` is fixed (buffer ``margin``), learnable (``nn.Parameter`` ``margin``) or the
    SIMO margin ``ln(alpha / K) / scale`` (``simo_margin``; with ``simo_K=None`` the
    ``K`` seen at forward time). A ramp ``factor`` in ``[0, 1]`` (buffer
    ``margin_factor``, 1 by default, set by ``set_margin_factor`` or the cosine
    ``update_margin``) scales it; the applied margin is

    * additive types: ``factor * m``;
    * SphereFace: ``1 + factor * (m - 1)`` (multiplicative, 1 is no margin);
    * MagFace: ``factor`` (it multiplies the per-anchor ``m(a)``);
    * none: 0.

    Arguments
    ---------
    margin_type : str
        One of ``MARGIN_TYPES``.
    margin : float
        ``m`` (SphereFace: multiplicative, > 0; unused by MagFace / none).
    margin_learnable : bool
        Make ``m`` an ``nn.Parameter`` (not for MagFace / none).
    margin_simo : bool
        SIMO margin instead of ``margin`` (additive types only).
    simo_K : int or None
        ``K``; None = negatives per anchor seen at forward time.
    simo_alpha : float
        ``alpha``.
    scale : float
        Logit scale of the owning loss (SIMO only).

    Example
    -------
    >>> sm = ScheduledMargin("cosface", 0.2)
    >>> sm.update_margin(0, 10), float(sm.effective_margin())
    (0.0, 0.0)
    >>> sm.set_margin_factor(0.5); round(float(sm.effective_margin()), 4)
    0.1
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
    ):
        super().__init__()
        if margin_type not in MARGIN_TYPES:
            raise ValueError(
                f"margin_type must be one of {MARGIN_TYPES}, got {margin_type!r}"
            )
        if margin_type == "sphereface":
            check_sphereface_margin(margin)
        if margin_simo and margin_type not in ADDITIVE_TYPES:
            raise ValueError(
                f"margin_simo needs an additive margin type {ADDITIVE_TYPES}, got "
                f"{margin_type!r}"
            )
        if margin_learnable and margin_type in ("none", "magface"):
            raise ValueError(f"margin_learnable is meaningless for {margin_type!r}")
        if margin_simo and simo_K is None and margin_learnable:
            raise ValueError(
                "margin_simo with margin_learnable needs an explicit simo_K"
            )
        self.margin_type = margin_type
        self.scale = float(scale)
        self.margin_simo = margin_simo
        self.simo_K = simo_K
        self.simo_alpha = float(simo_alpha)
        if margin_simo and simo_K is not None:
            margin = simo_margin(self.scale, self.simo_alpha, simo_K)
        m = torch.tensor(float(margin))
        if margin_learnable:
            self.margin = nn.Parameter(m)
        else:
            self.register_buffer("margin", m)
        self.register_buffer("margin_factor", torch.tensor(1.0))

    def set_margin(self, value):
        """Set the base margin ``m`` (in place; keeps a learnable parameter).

        Arguments
        ---------
        value : float
            New ``m``.
        """
        with torch.no_grad():
            self.margin.fill_(float(value))

    def set_margin_factor(self, factor):
        """Set the ramp factor multiplying the margin (see the class docstring).

        Arguments
        ---------
        factor : float
            In ``[0, 1]``.
        """
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"margin factor must be in [0, 1], got {factor}")
        self.margin_factor.fill_(float(factor))

    def update_margin(self, epoch, total_epochs):
        """Apply ``cosine_margin_schedule`` to the factor.

        Arguments
        ---------
        epoch : int
            Current epoch, from 0.
        total_epochs : int
            Number of epochs.

        Returns
        -------
        float
            The factor now in use.
        """
        factor = cosine_margin_schedule(epoch, total_epochs, 1.0)
        self.set_margin_factor(factor)
        return factor

    def base_margin(self, n_negatives=None):
        """Un-ramped margin ``m`` (scalar tensor; SIMO with runtime ``K`` when needed).

        Arguments
        ---------
        n_negatives : int or None
            ``K`` for SIMO with ``simo_K=None``.

        Returns
        -------
        torch.Tensor
            Scalar.
        """
        if self.margin_simo and self.simo_K is None:
            if n_negatives is None:
                raise ValueError("SIMO margin with simo_K=None needs n_negatives")
            return self.margin.new_tensor(
                simo_margin(self.scale, self.simo_alpha, n_negatives)
            )
        return self.margin

    def effective_margin(self, n_negatives=None):
        """Margin actually applied, ramp factor included (see the class docstring).

        Arguments
        ---------
        n_negatives : int or None
            ``K`` for SIMO with ``simo_K=None``.

        Returns
        -------
        torch.Tensor
            Scalar (for MagFace the factor multiplying ``m(a)``).
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
