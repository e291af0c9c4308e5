"""Distributed helpers shared by every method.

The collectives are no-ops (identity / rank 0 / world size 1) when
``torch.distributed`` is not initialised, so losses can call them unconditionally.
Also here: :func:`unwrap` (the module inside a DDP wrapper), shuffle-BN
(:func:`batch_shuffle` / :func:`batch_unshuffle`) and BatchNorm synchronised over
CPU (gloo) ranks (:class:`CPUSyncBatchNorm`).

``gather`` uses ``torch.distributed._functional_collectives.all_gather_tensor_autograd``
when available: the plain ``all_gather`` has no gradient, and
``torch.distributed.nn.functional.all_gather`` is deprecated in torch 2.14. In backward
the gradient of each rank's slice is summed over ranks (the same convention as
solo-learn's ``gather``), so a loss that is the mean over the *global* batch gives each
rank the correct gradient for its local samples once DDP averages the gradients
(DDP divides by world size, hence the mean-over-global-batch losses below multiply
nothing: ``sum over ranks`` / ``world size`` == gradient of the global mean).
"""

import torch
import torch.distributed as dist


def is_distributed():
    """True when a default process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    """Number of processes (1 without DDP)."""
    return dist.get_world_size() if is_distributed() else 1


def rank():
    """Rank of this process (0 without DDP)."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the incoming gradients over ranks."""

    @staticmethod
    def forward(ctx, x):
        ctx.batch = x.shape[0]
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather(x, grad=True):
    """All-gather ``x`` along dim 0 from every rank.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, ...)`` local tensor; every rank must pass the same ``N``.
    grad : bool
        Keep the autograd graph (gradients flow back to every rank's slice).

    Returns
    -------
    torch.Tensor
        ``(N * world_size, ...)``, rank order; ``x`` itself without DDP.
    """
    if not is_distributed():
        return x
    if grad and x.requires_grad:
        return _GatherWithGrad.apply(x)
    out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out, dim=0)


def unwrap(module):
    """The module inside a DDP / DataParallel wrapper, or ``module`` itself.

    Arguments
    ---------
    module : torch.nn.Module
        A module, possibly wrapped (the wrapper keeps it as ``.module``).

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> lin = torch.nn.Linear(2, 2)
    >>> unwrap(torch.nn.DataParallel(lin)) is lin, unwrap(lin) is lin
    (True, True)
    """
    return module.module if hasattr(module, "module") else module


def batch_shuffle(x):
    """Shuffle a batch across ranks before a key (momentum) encoder: shuffle-BN.

    BatchNorm normalises with statistics of the batch it sees, so a query and its key
    computed from the same sub-batch share those statistics, and a contrastive model
    can find its positive through them instead of through the content (MoCo,
    arXiv 1911.05722, section 3.3). Feeding the key encoder a shuffled batch gives a
    key the statistics of another subset than its query's. Under DDP the global
    batch is gathered, permuted with a permutation broadcast from rank 0, and each
    rank keeps its slice; in one process the permutation is local (it only matters
    when the key encoder then runs on sub-batches).

    Arguments
    ---------
    x : torch.Tensor
        ``(N, ...)`` local batch (the same ``N`` on every rank).

    Returns
    -------
    tuple of torch.Tensor
        ``(x_shuffled (N, ...), idx_unshuffle (N * world_size,))``; pass the index to
        :func:`batch_unshuffle`.

    Example
    -------
    >>> x = torch.arange(6.0).view(6, 1)
    >>> xs, idx = batch_shuffle(x)
    >>> torch.equal(batch_unshuffle(xs, idx), x)
    True
    """
    if not is_distributed():
        perm = torch.randperm(x.shape[0], device=x.device)
        return x[perm], torch.argsort(perm)
    n = x.shape[0]
    x_all = gather(x, grad=False)  # (W*N, ...)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    r = rank()
    return x_all[perm[r * n : (r + 1) * n]], torch.argsort(perm)


def batch_unshuffle(x, idx_unshuffle):
    """Put the outputs of a :func:`batch_shuffle`-d batch back in the local order.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, ...)`` outputs of the shuffled local batch.
    idx_unshuffle : torch.Tensor
        ``(N * world_size,)`` from :func:`batch_shuffle`.

    Returns
    -------
    torch.Tensor
        ``(N, ...)`` outputs in the original local order.
    """
    if not is_distributed():
        return x[idx_unshuffle]
    n = x.shape[0]
    x_all = gather(x, grad=False)  # (W*N, ...)
    r = rank()
    return x_all[idx_unshuffle[r * n : (r + 1) * n]]


def all_reduce_mean(x):
    """Average ``x`` over ranks (in place on a detached copy); identity without DDP."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def all_reduce_sum(x):
    """Sum ``x`` over ranks (detached copy); identity without DDP."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum of the gradients over ranks."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CPUSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over the global batch, for CPU (gloo) DDP.

    ``torch.nn.SyncBatchNorm`` only runs on accelerators, and SpeechBrain converts
    every BatchNorm to it under DDP, which breaks CPU runs
    (``speechbrain_integration.md`` §2). This layer all-reduces the per-channel sum and
    sum of squares (with gradient) so that N ranks with B samples each normalise exactly
    like one process with N*B samples. Accepts ``(B, C)``, ``(B, C, T)`` and
    ``(B, C, H, W)``; outside DDP or in eval mode it is a plain BatchNorm.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x):
        """Normalise with global-batch statistics in training mode under DDP."""
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor(
            float(x.numel() // x.shape[1]), device=x.device, dtype=torch.float64
        )
        dist.all_reduce(count)
        stats = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims)])
        stats = _AllReduceSum.apply(stats.float())
        c = x.shape[1]
        mean = stats[:c] / count.float()
        var = (stats[c:] / count.float() - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * (count / (count - 1).clamp_min(1)).float()
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm_cpu(module):
    """Replace each ``nn.BatchNorm*`` in ``module`` by :class:`CPUSyncBatchNorm`.

    Parameters and running statistics are kept (the new layer shares them).
    """
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CPUSyncBatchNorm | torch.nn.SyncBatchNorm
    ):
        new = CPUSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight = module.weight
            new.bias = module.bias
        if module.track_running_stats:
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm_cpu(child))
    return module
