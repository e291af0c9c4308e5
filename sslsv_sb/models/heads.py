"""Projection, prediction and clustering heads (all heads live in this one file).

A head is an MLP described by a list of blocks; named subclasses only set the block
list with the paper's defaults, so the architecture of each method is readable here.
Non-MLP heads: IterNorm (VIbCReg), the DINO head, SwAV / DeepCluster prototypes and
the CPC aggregator with its future-step predictors (:class:`CPCHead`).
"""

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP built from ``(in_dim, out_dim, batch_norm, activation, bias)`` blocks.

    Arguments
    ---------
    blocks : list of tuple
        Each ``(in_dim, out_dim, bn, act)`` or ``(in_dim, out_dim, bn, act, bias)``:
        ``bn`` is an ``nn.Module`` (e.g. ``nn.BatchNorm1d(out_dim)``) or None, ``act``
        an ``nn.Module`` or None, ``bias`` (default True) for the linear layer.

    Example
    -------
    >>> blocks = [(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)]
    >>> head = ProjectionHead(blocks)
    >>> head(torch.randn(5, 8)).shape
    torch.Size([5, 4])
    """

    def __init__(self, blocks):
        super().__init__()
        layers = []
        for block in blocks:
            in_dim, out_dim, bn, act = block[:4]
            bias = block[4] if len(block) > 4 else True
            layers.append(nn.Linear(in_dim, out_dim, bias=bias))
            if bn is not None:
                layers.append(bn)
            if act is not None:
                layers.append(act)
        self.layers = nn.Sequential(*layers)
        self.out_dim = blocks[-1][1]

    def forward(self, x):
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.layers(x)


def mlp_blocks(in_dim, hidden_dims, out_dim, last_bn=False, act=nn.ReLU):
    """Blocks for ``Linear-BN-act`` hidden layers and a plain (optionally BN) output."""
    dims = [in_dim, *hidden_dims]
    blocks = [(a, b, nn.BatchNorm1d(b), act()) for a, b in zip(dims[:-1], dims[1:])]
    blocks.append(
        (
            dims[-1],
            out_dim,
            nn.BatchNorm1d(out_dim, affine=False) if last_bn else None,
            None,
        )
    )
    return blocks


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR projector (arXiv 2002.05709): ``Linear-BN-ReLU`` x n_hidden, then Linear.

    sslsv's default is 3 layers (2048-2048-128); its headline speaker configs use no
    projector at all (``projector: null`` in the recipes).
    """

    def __init__(self, in_dim, hidden_dim=2048, out_dim=128, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


class Identity(nn.Module):
    """Identity head that still exposes ``out_dim`` (for "no projector" configs)."""

    def __init__(self, dim):
        super().__init__()
        self.out_dim = dim

    def forward(self, x):
        """Return ``x`` unchanged."""
        return x


# --------------------------------------------------------------------------------------
# Non-contrastive / clustering heads. Dimensions default to sslsv's configs; the paper's
# values are quoted in each docstring.
# --------------------------------------------------------------------------------------


def _linear_bn_relu_blocks(in_dim, hidden_dims, bias=True):
    """``Linear-BN-ReLU`` blocks (helper for heads whose last layer is special)."""
    dims = [in_dim, *hidden_dims]
    return [
        (a, b, nn.BatchNorm1d(b), nn.ReLU(), bias) for a, b in zip(dims[:-1], dims[1:])
    ]


class BYOLProjectionHead(ProjectionHead):
    """BYOL projector (arXiv 2006.07733, sec. 3.3).

    Paper: "a multi-layer perceptron (MLP) with a linear layer with output size 4096
    followed by batch normalization, rectified linear units (ReLU), and a final linear
    layer with output dimension 256" (``n_hidden=1``). sslsv uses 3 layers
    (``n_hidden=2``, 4096-4096-256), the default here.

    Example
    -------
    >>> BYOLProjectionHead(8, 16, 4)(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_dim, hidden_dim=4096, out_dim=256, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


class BYOLPredictionHead(ProjectionHead):
    """BYOL predictor (arXiv 2006.07733): same MLP shape as the paper's projector,
    ``Linear(D, 4096)-BN-ReLU-Linear(4096, D)`` (sslsv: identical, D=256).

    Example
    -------
    >>> BYOLPredictionHead(4, 16)(torch.randn(3, 4)).shape
    torch.Size([3, 4])
    """

    def __init__(self, dim=256, hidden_dim=4096):
        super().__init__(mlp_blocks(dim, [hidden_dim], dim))


class SimSiamProjectionHead(ProjectionHead):
    """SimSiam projector (arXiv 2011.10566, sec. 4 "Baseline settings").

    Paper: "The projection MLP has BN applied to each fully-connected (fc) layer,
    including its output fc. Its output fc has no ReLU. The hidden fc is 2048-d. This
    MLP has 3 layers." Here: ``(Linear-BN-ReLU) x n_hidden`` then ``Linear-BN`` with
    ``affine=False`` on the last BN (as sslsv). Linear layers followed by BN have no
    bias (a bias before BN is a no-op; sslsv freezes it with a hack instead).

    Example
    -------
    >>> SimSiamProjectionHead(8, 16, 6)(torch.randn(3, 8)).shape
    torch.Size([3, 6])
    """

    def __init__(self, in_dim, hidden_dim=2048, out_dim=2048, n_hidden=2):
        blocks = _linear_bn_relu_blocks(in_dim, [hidden_dim] * n_hidden, bias=False)
        last_in = hidden_dim if n_hidden > 0 else in_dim
        blocks.append(
            (last_in, out_dim, nn.BatchNorm1d(out_dim, affine=False), None, False)
        )
        super().__init__(blocks)


class SimSiamPredictionHead(ProjectionHead):
    """SimSiam predictor (arXiv 2011.10566): "The prediction MLP has BN applied to its
    hidden fc layers. Its output fc does not have BN or ReLU. This MLP has 2 layers.
    The dimension of h's input and output is 2048, and h's hidden layer's dimension is
    512" (bottleneck). ``Linear(D, 512, no bias)-BN-ReLU-Linear(512, D)``.

    Example
    -------
    >>> SimSiamPredictionHead(6, 4)(torch.randn(3, 6)).shape
    torch.Size([3, 6])
    """

    def __init__(self, dim=2048, hidden_dim=512):
        blocks = _linear_bn_relu_blocks(dim, [hidden_dim], bias=False)
        blocks.append((hidden_dim, dim, None, None, True))
        super().__init__(blocks)


class BarlowTwinsProjectionHead(ProjectionHead):
    """Barlow Twins projector (arXiv 2103.03230, sec. 3): "three linear layers, each
    with 8192 output units. The first two layers of the projector are followed by a
    batch normalization layer and rectified linear units." (sslsv: the same,
    8192-8192-8192.)

    Example
    -------
    >>> BarlowTwinsProjectionHead(8, 16, 6)(torch.randn(3, 8)).shape
    torch.Size([3, 6])
    """

    def __init__(self, in_dim, hidden_dim=8192, out_dim=8192, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


class VICRegProjectionHead(ProjectionHead):
    """VICReg expander (arXiv 2105.04906, sec. 4.2): "composed of two fully-connected
    layers with batch normalization (BN) and ReLU, and a third linear layer",
    8192-8192-8192 (sslsv: same).

    Example
    -------
    >>> VICRegProjectionHead(8, 16, 6)(torch.randn(3, 8)).shape
    torch.Size([3, 6])
    """

    def __init__(self, in_dim, hidden_dim=8192, out_dim=8192, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


class WMSEProjectionHead(ProjectionHead):
    """W-MSE projection head (arXiv 2007.06346, sec. 5): "an MLP with one hidden layer
    (1024 units, BN, ReLU)" and a 64-d (CIFAR) / 128-d output; sslsv: 1024 -> 64.

    Example
    -------
    >>> WMSEProjectionHead(8, 16, 4)(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_dim, hidden_dim=1024, out_dim=64):
        super().__init__(mlp_blocks(in_dim, [hidden_dim], out_dim))


class SwAVProjectionHead(ProjectionHead):
    """SwAV / DeepCluster v2 projection head (arXiv 2006.09882): ``Linear-BN-ReLU`` then
    ``Linear`` to 128 (paper: hidden 2048, output 128; sslsv: 3 layers, 2048-2048-128,
    ``n_hidden=2``). The losses L2-normalise the output.

    Example
    -------
    >>> SwAVProjectionHead(8, 16, 4)(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_dim, hidden_dim=2048, out_dim=128, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


DeepClusterProjectionHead = SwAVProjectionHead


class IterNorm(nn.Module):
    """Group-wise whitening by Newton-Schulz iterations (Iterative Normalization,
    Huang et al., arXiv 1904.03441; used by VIbCReg, arXiv 2109.00783).

    The ``D`` features are split into ``num_groups`` groups of ``C = D / num_groups``
    consecutive features. For each group, with the centred batch ``X (C, N)``:
    ``S = X X^T / N + eps I``, ``S_N = S / tr(S)``, ``P_0 = I``,
    ``P_{k+1} = (3 P_k - P_k^3 S_N) / 2`` for ``T`` iterations, whitening matrix
    ``W = P_T / sqrt(tr(S))`` and output ``W X`` (an approximation of ``S^{-1/2} X``
    that improves with ``T``; being the uncoupled Newton iteration it is not stable
    in fp32 for very large ``T`` (diverges around T=30 here), so keep T ~ 5-10 as in
    the paper). Running mean / whitening matrix (momentum) are used in
    eval mode. Optional per-feature affine transform.

    Arguments
    ---------
    num_features : int
        ``D``; must be a multiple of ``num_groups``.
    num_groups : int
        Number of groups (sslsv / VIbCReg: 64).
    T : int
        Newton-Schulz iterations (5).
    eps : float
        Diagonal loading of the covariance.
    momentum : float
        Running-statistics momentum.
    affine : bool
        Learn a per-feature scale (init 1) and shift (init 0).

    Example
    -------
    >>> IterNorm(8, num_groups=2)(torch.randn(16, 8)).shape
    torch.Size([16, 8])
    """

    def __init__(
        self, num_features, num_groups=64, T=5, eps=1e-5, momentum=0.1, affine=True
    ):
        super().__init__()
        if num_groups < 1 or num_features % num_groups != 0:
            raise ValueError(
                f"IterNorm: num_features={num_features} must be a multiple of "
                f"num_groups={num_groups}"
            )
        self.num_features = num_features
        self.num_groups = num_groups
        self.T = T
        self.eps = eps
        self.momentum = momentum
        c = num_features // num_groups
        self.register_buffer("running_mean", torch.zeros(num_groups, c, 1))
        self.register_buffer(
            "running_wm", torch.eye(c).expand(num_groups, c, c).clone()
        )
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        """``(N, D) -> (N, D)`` whitened within each group of features."""
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"IterNorm expects (N, {self.num_features}), got {tuple(x.shape)}"
            )
        n = x.shape[0]
        g = self.num_groups
        c = self.num_features // g
        xg = x.T.reshape(g, c, n)  # (G, C, N)
        if self.training:
            if n < 2:
                raise ValueError("IterNorm needs a batch of at least 2 in training")
            mean = xg.mean(dim=-1, keepdim=True)  # (G, C, 1)
            xc = xg - mean
            eye = torch.eye(c, device=x.device, dtype=x.dtype).expand(g, c, c)
            sigma = torch.baddbmm(
                eye, xc, xc.transpose(1, 2), beta=self.eps, alpha=1.0 / n
            )  # (G, C, C)
            trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]  # (G,1,1)
            sigma_n = sigma / trace
            p = eye
            for _ in range(self.T):
                p3 = torch.bmm(torch.bmm(p, p), p)
                p = torch.baddbmm(p, p3, sigma_n, beta=1.5, alpha=-0.5)
            wm = p / trace.sqrt()  # (G, C, C)
            with torch.no_grad():
                self.running_mean.lerp_(
                    mean.detach().to(self.running_mean), self.momentum
                )
                self.running_wm.lerp_(wm.detach().to(self.running_wm), self.momentum)
        else:
            xc = xg - self.running_mean
            wm = self.running_wm
        out = torch.bmm(wm, xc).reshape(self.num_features, n).T  # (N, D)
        if self.weight is not None:
            out = out * self.weight + self.bias
        return out


class VIbCRegProjectionHead(nn.Module):
    """VIbCReg projector (arXiv 2109.00783, sec. 3): the VICReg-style MLP
    ``(Linear-BN-ReLU) x n_hidden - Linear`` followed by ``IterNorm`` (64 groups, T=5,
    affine), which makes the feature components decorrelated ("whitened") and speeds
    up the convergence of the covariance term. sslsv: 8192-8192-8192.

    Example
    -------
    >>> VIbCRegProjectionHead(8, 16, 8, iternorm_groups=2)(torch.randn(5, 8)).shape
    torch.Size([5, 8])
    """

    def __init__(
        self,
        in_dim,
        hidden_dim=8192,
        out_dim=8192,
        n_hidden=2,
        iternorm_groups=64,
        iternorm_iters=5,
    ):
        super().__init__()
        self.mlp = ProjectionHead(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))
        self.iternorm = IterNorm(out_dim, num_groups=iternorm_groups, T=iternorm_iters)
        self.out_dim = out_dim

    def forward(self, x):
        """``(N, in_dim) -> (N, out_dim)``."""
        return self.iternorm(self.mlp(x))


def _fixed_unit_weight_norm(linear):
    """Weight-normalise ``linear`` per output row with the gain g fixed to 1 (frozen).

    Uses ``torch.nn.utils.parametrizations.weight_norm`` (``weight = g v / ||v||``);
    g is ``parametrizations.weight.original0``, v is ``...original1``.
    """
    linear = nn.utils.parametrizations.weight_norm(linear, name="weight", dim=0)
    g = linear.parametrizations.weight.original0
    with torch.no_grad():
        g.fill_(1.0)
    g.requires_grad_(False)
    return linear


class DINOHead(nn.Module):
    """DINO projection head (arXiv 2104.14294, sec. 3.1 / appendix).

    Paper: "a 3-layer multi-layer perceptron (MLP) with hidden dimension 2048 followed
    by l2 normalization and a weight normalized fully connected layer with K
    dimensions". The MLP ends in a 256-d bottleneck; the last layer has no bias and its
    weight-norm gain g is fixed to 1 (``norm_last_layer=True``). sslsv: the same with BN
    in the MLP (``use_bn=True``), K=65536. MLP weights: truncated normal (std 0.02),
    zero biases.

    Arguments
    ---------
    in_dim : int
        Encoder output dimension.
    hidden_dim, bottleneck_dim, out_dim : int
        MLP hidden size, bottleneck size and number of output logits K.
    n_layers : int
        Linear layers of the MLP (>= 1).
    act : type
        Activation class (``nn.GELU``).
    use_bn : bool
        BatchNorm after the hidden linear layers.
    norm_last_layer : bool
        Freeze the weight-norm gain of the last layer at 1.

    Example
    -------
    >>> head = DINOHead(8, 16, 4, 32)
    >>> head(torch.randn(3, 8)).shape
    torch.Size([3, 32])
    """

    def __init__(
        self,
        in_dim,
        hidden_dim=2048,
        bottleneck_dim=256,
        out_dim=65536,
        n_layers=3,
        act=nn.GELU,
        use_bn=True,
        norm_last_layer=True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"DINOHead needs n_layers >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        blocks = [
            (a, b, nn.BatchNorm1d(b) if use_bn else None, act())
            for a, b in zip(dims[:-1], dims[1:])
        ]
        blocks.append((dims[-1], bottleneck_dim, None, None))
        self.mlp = ProjectionHead(blocks)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        if norm_last_layer:
            self.last_layer = _fixed_unit_weight_norm(last)
        else:
            self.last_layer = nn.utils.parametrizations.weight_norm(last, dim=0)
            with torch.no_grad():
                self.last_layer.parametrizations.weight.original0.fill_(1.0)
        self.out_dim = out_dim

    def forward(self, x):
        """``(N, in_dim) -> (N, out_dim)`` logits (bottleneck L2-normalised)."""
        x = nn.functional.normalize(self.mlp(x), dim=-1)  # (N, bottleneck)
        return self.last_layer(x)

    def cancel_last_layer_gradients(self):
        """Drop the last layer's gradients (``grad = None``).

        Call between ``backward`` and the optimiser step during the first
        ``freeze_last_layer`` epoch(s) (DINO: 1), e.g. in the Brain's
        ``optimizers_step`` override. Parameters with ``grad=None`` are skipped by the
        optimiser (no weight decay either).
        """
        for p in self.last_layer.parameters():
            p.grad = None


class SwAVPrototypes(nn.Module):
    """SwAV prototypes (arXiv 2006.09882): K trainable unit vectors ``c_k``; scores
    ``z^T c_k`` for L2-normalised ``z``. Implemented as a bias-free linear layer with
    weight normalisation and gain fixed to 1 (sslsv), which keeps every prototype on
    the unit sphere like the paper's explicit re-normalisation after each step.
    sslsv: K=3000, frozen during the first epoch (``freeze_prototypes_epochs=1``):
    call ``cancel_gradients()`` between backward and the optimiser step then.

    Example
    -------
    >>> protos = SwAVPrototypes(4, 10)
    >>> protos(torch.randn(3, 4)).shape, protos.normalized_weight().shape
    (torch.Size([3, 10]), torch.Size([10, 4]))
    """

    def __init__(self, dim=128, n_prototypes=3000):
        super().__init__()
        self.layer = _fixed_unit_weight_norm(nn.Linear(dim, n_prototypes, bias=False))
        self.dim = dim
        self.n_prototypes = n_prototypes

    def forward(self, z):
        """``(N, D) -> (N, K)`` scores (``z`` should be L2-normalised)."""
        return self.layer(z)

    def normalized_weight(self):
        """``(K, D)`` unit-norm prototypes, detached (for scoring the SwAV queue)."""
        return self.layer.weight.detach()

    def cancel_gradients(self):
        """Drop the prototypes' gradients (``grad = None``), e.g. during epoch 0."""
        for p in self.parameters():
            p.grad = None


class DeepClusterPrototypes(nn.Module):
    """DeepCluster v2 prototypes (arXiv 2006.09882, appendix "DeepCluster-v2"): one
    frozen bias-free linear layer per clustering head, set to the k-means centroids at
    each epoch start (sslsv: 3 heads of 3000). Stored as buffers ``weight_{h}`` (no
    gradient, checkpointed with the module).

    Example
    -------
    >>> protos = DeepClusterPrototypes(4, [5, 6])
    >>> [s.shape for s in protos(torch.randn(3, 4))]
    [torch.Size([3, 5]), torch.Size([3, 6])]
    """

    def __init__(self, dim=128, n_prototypes=(3000, 3000, 3000)):
        super().__init__()
        self.dim = dim
        self.n_prototypes = list(n_prototypes)
        for h, k in enumerate(self.n_prototypes):
            w = nn.functional.normalize(torch.randn(k, dim), dim=1)
            self.register_buffer(f"weight_{h}", w)

    def weights(self):
        """List of the ``(K_h, D)`` prototype matrices."""
        return [getattr(self, f"weight_{h}") for h in range(len(self.n_prototypes))]

    def forward(self, z):
        """``(N, D) -> [ (N, K_h) for each head ]``."""
        return [z @ w.to(z.dtype).T for w in self.weights()]

    @torch.no_grad()
    def set_centroids(self, centroids):
        """Copy the k-means centroids (list of ``(K_h, D)``) into the prototypes."""
        if len(centroids) != len(self.n_prototypes):
            raise ValueError(
                f"expected {len(self.n_prototypes)} centroid matrices, "
                f"got {len(centroids)}"
            )
        for w, c in zip(self.weights(), centroids):
            if c.shape != w.shape:
                raise ValueError(
                    f"centroids {tuple(c.shape)} != prototypes {tuple(w.shape)}"
                )
            w.copy_(c)


# ------------------------------------------------------------------------ CPC
def _reverse_valid(x, lengths):
    """Reverse each sequence within its valid length (padding stays at the end).

    Arguments
    ---------
    x : torch.Tensor
        ``(B, T, C)``.
    lengths : torch.Tensor
        ``(B,)`` absolute valid lengths.

    Returns
    -------
    torch.Tensor
        ``(B, T, C)``.
    """
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return torch.gather(x, 1, idx[:, :, None].expand_as(x))


class CPCHead(nn.Module):
    """CPC aggregator and future-step predictors (arXiv 1807.03748).

    An autoregressive aggregator (GRU/LSTM) over the encoder frames and ``k`` linear
    future-step predictors ``W_k``; its final hidden state is the utterance embedding
    (:meth:`embed`). The loss is :class:`~sslsv_sb.losses.cpc.CPCLoss`.

    Pair construction (``mode``):

    * ``"same"`` (default, the paper's design): context and future frames come from
      the same sequence. With ``context="all"`` every position ``t`` with
      ``t + k < T`` is a context (``c_t`` summarises ``z_0..z_t``), with
      ``context="last"`` only the last one (``c`` over ``z_0..z_{T-k-1}``, predicting
      the last ``k`` frames).
    * ``"two_crop"`` (sslsv's design): the context is the aggregator state over crop 1
      without its last ``k`` frames and the targets are the last ``k`` frames of
      crop 2 (another random crop of the same utterance), so the model predicts
      frames of a different segment of the utterance.

    Bidirectional: a second aggregator and predictor set run on the time-reversed
    sequences; the loss averages both directions and the embedding concatenates both
    final states.

    Arguments
    ---------
    in_dim : int
        Channels ``C`` of the encoder frames.
    aggregator : str
        ``"gru"`` or ``"lstm"``.
    hidden : int
        Aggregator size (context dimension).
    n_layers : int
        Aggregator layers.
    n_predict : int
        ``k``: number of future steps predicted.
    bidirectional : bool
        Also run on time-reversed sequences (separate aggregator and predictors).
    mode : str
        ``"same"`` (paper) or ``"two_crop"`` (sslsv); see above.
    context : str
        For ``mode="same"``: ``"all"`` context positions or only the ``"last"``.

    Example
    -------
    >>> head = CPCHead(16, hidden=8, n_predict=2)
    >>> pred, tgt = head(torch.randn(3, 16, 10))
    >>> pred.shape, tgt.shape
    (torch.Size([3, 8, 2, 16]), torch.Size([3, 8, 2, 16]))
    >>> head.embed(torch.randn(3, 16, 10)).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        in_dim,
        aggregator="gru",
        hidden=256,
        n_layers=1,
        n_predict=4,
        bidirectional=False,
        mode="same",
        context="all",
    ):
        super().__init__()
        rnns = {"gru": nn.GRU, "lstm": nn.LSTM}
        for name, value, allowed in (
            ("aggregator", aggregator, tuple(rnns)),
            ("mode", mode, ("same", "two_crop")),
            ("context", context, ("all", "last")),
        ):
            if value not in allowed:
                raise ValueError(
                    f"CPCHead: {name} must be one of {allowed}, got {value!r}"
                )
        if n_predict < 1:
            raise ValueError(f"CPCHead: n_predict must be >= 1, got {n_predict}")
        self.n_predict = n_predict
        self.mode = mode
        self.context = context
        self.n_dirs = 2 if bidirectional else 1
        self.aggregators = nn.ModuleList(
            rnns[aggregator](in_dim, hidden, n_layers, batch_first=True)
            for _ in range(self.n_dirs)
        )
        self.predictors = nn.ModuleList(
            nn.ModuleList(nn.Linear(hidden, in_dim) for _ in range(n_predict))
            for _ in range(self.n_dirs)
        )
        self.out_dim = hidden * self.n_dirs

    def _predict(self, d, ctx):
        """``(B, S, H)`` contexts -> ``(B, S, k, C)`` predictions of direction ``d``."""
        return torch.stack([w(ctx) for w in self.predictors[d]], dim=2)

    def forward(self, frames, target_frames=None):
        """Predictions and their true future frames.

        Arguments
        ---------
        frames : torch.Tensor
            ``(B, C, T)`` encoder frames (crop 1 in ``two_crop`` mode).
        target_frames : torch.Tensor, optional
            ``(B, C, T2)`` frames of crop 2; required (only) in ``two_crop`` mode.

        Returns
        -------
        tuple of torch.Tensor
            ``predictions (B, S, k, C)`` and ``targets (B, S, k, C)`` where ``S`` stacks
            context positions and directions (every ``(s, j)`` pair is one InfoNCE
            problem over the batch).
        """
        k = self.n_predict
        if frames.dim() != 3:
            raise ValueError(
                f"CPCHead expects frames (B, C, T), got {tuple(frames.shape)}"
            )
        x = frames.transpose(1, 2)  # (B, T, C)
        if x.shape[1] <= k:
            raise ValueError(
                f"CPCHead: need more than n_predict={k} frames, got T={x.shape[1]}"
            )
        if self.mode == "two_crop":
            if target_frames is None:
                raise ValueError(
                    "CPCHead(mode='two_crop') needs target_frames (crop 2)"
                )
            y = target_frames.transpose(1, 2)  # (B, T2, C)
            if y.shape[1] < k:
                raise ValueError(
                    f"CPCHead: crop 2 has {y.shape[1]} frames < n_predict={k}"
                )
        elif target_frames is not None:
            raise ValueError("CPCHead(mode='same') takes a single frame sequence")
        preds, tgts = [], []
        for d in range(self.n_dirs):
            xd = x.flip(1) if d else x
            if self.mode == "two_crop":
                yd = y.flip(1) if d else y
                ctx = self.aggregators[d](xd[:, :-k])[0][:, -1:]  # (B, 1, H)
                tgt = yd[:, -k:][:, None]  # (B, 1, k, C)
            else:
                steps = x.shape[1] - k
                ctx = self.aggregators[d](xd[:, :steps])[0]  # (B, T-k, H)
                # target of context t and step j (1..k) is frame t + j
                tgt = torch.stack(
                    [xd[:, j : steps + j] for j in range(1, k + 1)], dim=2
                )
                if self.context == "last":
                    ctx, tgt = ctx[:, -1:], tgt[:, -1:]  # (B, 1, H), (B, 1, k, C)
            preds.append(self._predict(d, ctx))
            tgts.append(tgt)
        return torch.cat(preds, dim=1), torch.cat(tgts, dim=1)

    def embed(self, frames, lengths=None):
        """Utterance embedding = final aggregator hidden state (last layer).

        Arguments
        ---------
        frames : torch.Tensor
            ``(B, C, T)`` encoder frames.
        lengths : torch.Tensor, optional
            ``(B,)`` relative lengths in (0, 1] (SpeechBrain convention).

        Returns
        -------
        torch.Tensor
            ``(B, hidden * n_dirs)``; directions concatenated.
        """
        x = frames.transpose(1, 2)  # (B, T, C)
        b, t = x.shape[:2]
        if lengths is None:
            abs_len = torch.full((b,), t, dtype=torch.long, device=x.device)
        else:
            abs_len = (lengths.to(x.device).float() * t).round().long().clamp(1, t)
        outs = []
        for d in range(self.n_dirs):
            xd = _reverse_valid(x, abs_len) if d else x
            packed = nn.utils.rnn.pack_padded_sequence(
                xd, abs_len.cpu(), batch_first=True, enforce_sorted=False
            )
            h = self.aggregators[d](packed)[1]
            h = h[0] if isinstance(h, tuple) else h  # LSTM returns (h, c)
            outs.append(h[-1])  # (B, H), last layer
        return torch.cat(outs, dim=1)
