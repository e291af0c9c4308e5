"""Distributed helpers shared by every method.

All helpers are no-ops (identity / rank 0 / world size 1) when ``torch.distributed``
is not initialised, so losses can call them unconditionally.

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
