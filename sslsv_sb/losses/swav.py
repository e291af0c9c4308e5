"""SwAV loss (Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", arXiv 2006.09882).

Swapped prediction (eq. 1-2): codes ``q`` computed without gradient from one view by
Sinkhorn-Knopp (sec. 3.1, eq. 3-5: the assignment matrix of the batch is projected on
the transportation polytope "each prototype gets B/K samples, each sample one unit of
mass") predict the softmax of the other view's prototype scores at temperature tau:
``l(z_t, q_s) = -sum_k q_s^(k) log softmax(z_t^T C / tau)^(k)``.

Queue (sec. 4 / appendix "small batches"): the embeddings of past batches are stored
and scored with the current prototypes; they are appended to the batch for Sinkhorn
only (the codes of the current batch are kept). sslsv starts the queue at epoch 15 and
feeds Sinkhorn zero rows until it is full; here only the filled part of the queue is
used (``queue_filled`` buffer), and the queue starts filling at ``queue_start_epoch``.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import all_reduce_sum, is_distributed, world_size


@torch.no_grad()
def sinkhorn_knopp(scores, epsilon=0.05, iters=3):
    """Sinkhorn-Knopp codes of a batch of prototype scores (SwAV, arXiv 2006.09882).

    ``Q = exp(scores / epsilon)^T`` (K x B, B = global batch size) is normalised to
    total mass 1 and then ``iters`` times alternately rescaled so that every prototype
    (row) has mass ``1/K`` and every sample (column) has mass ``1/B``; the result is
    multiplied by ``B``. Sums over the batch are all-reduced, so under DDP each rank
    gets its rows of the global solution.

    Marginals of the returned ``(N, K)`` codes (``N`` local rows): each **sample row
    sums to exactly 1** (the last step normalises samples); summed over the **global**
    batch, each **prototype column sums to B/K** at convergence (after a finite
    ``iters`` it is approximately B/K; exactly B/K if one stops after the prototype
    step). Scores are shifted by their global maximum before ``exp`` (the total-mass
    normalisation makes this exact) to avoid overflow.

    Arguments
    ---------
    scores : torch.Tensor
        ``(N, K)`` prototype scores of the local batch (cosines).
    epsilon : float
        Entropic regularisation (0.05).
    iters : int
        Number of (rows, columns) normalisation rounds (3).

    Returns
    -------
    torch.Tensor
        ``(N, K)`` soft codes (fp32).

    Example
    -------
    >>> q = sinkhorn_knopp(torch.randn(6, 4))
    >>> torch.allclose(q.sum(dim=1), torch.ones(6))
    True
    """
    scores = scores.detach().float()
    n, k = scores.shape
    b = n * world_size()
    shift = scores.max()
    if is_distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((scores - shift) / epsilon).T  # (K, N)
    q = q / all_reduce_sum(q.sum())
    for _ in range(iters):
        q = q / all_reduce_sum(q.sum(dim=1, keepdim=True))  # prototypes -> 1
        q = q / k  # prototypes -> 1/K
        q = q / q.sum(dim=0, keepdim=True)  # samples -> 1
        q = q / b  # samples -> 1/B
    return (q * b).T  # (N, K)


class SwAVLoss(nn.Module):
    """SwAV swapped-prediction loss with Sinkhorn codes and a feature queue.

    Arguments
    ---------
    n_prototypes : int
        K (sslsv: 3000).
    temperature : float
        tau of the prediction softmax (0.1).
    sk_iters : int
        Sinkhorn iterations (3).
    sk_epsilon : float
        Sinkhorn epsilon (0.05).
    queue_size : int
        Global queue length (sslsv: 3840; 0 disables the queue); each rank keeps
        ``queue_size // world_size()`` (world size at construction).
    queue_start_epoch : int
        0-based epoch from which the queue is filled and used (sslsv: 15).
    embed_dim : int
        D of the embeddings stored in the queue (sslsv: 128).
    n_assign : int
        Number of views (the first ones) whose codes are computed (2).

    Buffers (checkpoint them): ``queue (n_assign, queue_size // W, D)``,
    ``queue_filled`` (number of valid rows, scalar long).

    Example
    -------
    >>> loss = SwAVLoss(n_prototypes=5, queue_size=0, embed_dim=4)
    >>> z = F.normalize(torch.randn(2, 6, 4), dim=-1)
    >>> protos = F.normalize(torch.randn(5, 4), dim=-1)
    >>> loss(z, z @ protos.T, protos, epoch=0).shape
    torch.Size([])
    """

    def __init__(
        self,
        n_prototypes,
        temperature=0.1,
        sk_iters=3,
        sk_epsilon=0.05,
        queue_size=3840,
        queue_start_epoch=15,
        embed_dim=128,
        n_assign=2,
    ):
        super().__init__()
        if temperature <= 0 or sk_epsilon <= 0:
            raise ValueError("SwAV temperature and sk_epsilon must be > 0")
        self.n_prototypes = n_prototypes
        self.temperature = temperature
        self.sk_iters = sk_iters
        self.sk_epsilon = sk_epsilon
        self.queue_start_epoch = queue_start_epoch
        self.embed_dim = embed_dim
        self.n_assign = n_assign
        local_queue = queue_size // world_size() if queue_size > 0 else 0
        self.register_buffer("queue", torch.zeros(n_assign, local_queue, embed_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.last_metrics = {}

    @torch.no_grad()
    def _push(self, embeddings):
        """FIFO insert of ``embeddings (n_assign, N, D)`` at the queue front."""
        length = self.queue.shape[1]
        n = min(embeddings.shape[1], length)
        self.queue[:, n:] = self.queue[:, : length - n].clone()
        self.queue[:, :n] = embeddings[:, :n].to(self.queue)
        self.queue_filled.fill_(min(int(self.queue_filled) + n, length))

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, embeddings, scores, prototypes, epoch=0):
        """Swapped-prediction loss.

        Arguments
        ---------
        embeddings : torch.Tensor or list of torch.Tensor
            ``(V, N, D)`` (or a list of V ``(N, D)``) L2-normalised projections; only
            the first ``n_assign`` views are used (detached) to fill the queue.
        scores : torch.Tensor or list of torch.Tensor
            ``(V, N, K)`` prototype scores ``z^T C`` (with gradient), from the
            (DDP-wrapped) ``SwAVPrototypes`` module.
        prototypes : torch.Tensor
            ``(K, D)`` unit-norm prototypes (``SwAVPrototypes.normalized_weight()``),
            used without gradient to score the queue.
        epoch : int
            0-based epoch (queue start).

        Returns
        -------
        torch.Tensor
            Scalar: mean over the ``n_assign * (V - 1)`` (code view s, predicted view
            t != s) pairs of the batch-mean cross-entropy.
        """
        if isinstance(embeddings, (list, tuple)):
            embeddings = torch.stack(list(embeddings))
        if isinstance(scores, (list, tuple)):
            scores = torch.stack(list(scores))
        embeddings, scores = embeddings.float(), scores.float()
        if embeddings.dim() != 3 or scores.dim() != 3:
            raise ValueError(
                "SwAVLoss expects (V, N, D) embeddings and (V, N, K) scores"
            )
        v, n, k = scores.shape
        if embeddings.shape[:2] != (v, n) or k != self.n_prototypes:
            raise ValueError(
                f"SwAVLoss: embeddings {tuple(embeddings.shape)} and scores "
                f"{tuple(scores.shape)} disagree (K must be {self.n_prototypes})"
            )
        if v < max(2, self.n_assign) or n < 2:
            raise ValueError(
                f"SwAVLoss needs >= {max(2, self.n_assign)} views and a batch >= 2, "
                f"got V={v}, N={n}"
            )
        use_queue = self.queue.shape[1] > 0 and epoch >= self.queue_start_epoch
        filled = int(self.queue_filled)

        log_p = F.log_softmax(scores / self.temperature, dim=-1)  # (V, N, K)
        loss = scores.new_zeros(())
        for s in range(self.n_assign):
            with torch.no_grad():
                sc = scores[s].detach()  # (N, K)
                if use_queue and filled > 0:
                    queue_scores = self.queue[s, :filled].to(sc) @ prototypes.to(sc).T
                    sc = torch.cat([sc, queue_scores])  # (N + filled, K)
                q = sinkhorn_knopp(sc, self.sk_epsilon, self.sk_iters)[:n]  # (N, K)
            for t in range(v):
                if t != s:
                    loss = loss - (q * log_p[t]).sum(dim=-1).mean()
        loss = loss / (self.n_assign * (v - 1))
        if use_queue and self.training:
            self._push(embeddings[: self.n_assign].detach())
        return loss
