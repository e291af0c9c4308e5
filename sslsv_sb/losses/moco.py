"""MoCo v2+ loss with per-view key queues, optional margins and class-collision masks.

MoCo (arXiv 1911.05722) / MoCo v2 (arXiv 2003.04297): InfoNCE between a query ``q``,
its momentum-encoder key ``k`` (positive) and a FIFO queue of past keys (negatives),
temperature 0.2, queue 65536. The "v2+" variant used by sslsv is symmetric over two
views (as in MoCo v3, arXiv 2104.02057) with one queue per view. Margins on the
positive logit follow arXiv 2404.14913 (``sslsv_sb.losses.margins``). Shuffle-BN
for the key encoder is :func:`sslsv_sb.distributed.batch_shuffle`.
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb import distributed as dist_utils
from sslsv_sb.losses.margins import build_margin


class MoCoLoss(nn.Module):
    """Symmetric MoCo v2+ InfoNCE loss with one key queue per view (arXiv 2003.04297).

    ``loss = (L(q1, k2, queue[1]) + L(q2, k1, queue[0])) / 2`` with
    ``L(q, k, Q) = CE([s * m(q.k), s * q.Q^T], 0)`` (``s = 1 / temperature``, ``m`` the
    optional positive margin of arXiv 2404.14913), every vector L2-normalised. After
    the loss, ``forward`` enqueues the gathered keys (``k1`` -> ``queue[0]``,
    ``k2`` -> ``queue[1]``) as a FIFO ring (any global batch size; wraps around).

    Arguments
    ---------
    dim : int
        Embedding dimension ``D``.
    queue_size : int
        ``Q`` (65536).
    temperature : float
        ``tau`` (0.2). sslsv's MoCoMargins uses scale 33.3, i.e. ``temperature=0.03``.
    n_views : int
        Number of views / queues; only the symmetric 2-view variant is implemented.
    margin : None, str, dict or PositiveMargin
        Margin on the positive logit (``sslsv_sb.losses.margins.build_margin``); the
        SIMO ``K`` defaults to ``Q``. MagFace / AdaFace get the un-normalised query
        norms.
    prevent_class_collisions : bool
        Keep a label queue; queue entries with the query's label get logit ``-inf``
        (requires ``labels`` in ``forward``; labels must be >= 0).

    Example
    -------
    >>> loss_fn = MoCoLoss(dim=8, queue_size=16)
    >>> q1, q2, k1, k2 = torch.randn(4, 4, 8).unbind(0)
    >>> loss = loss_fn(q1, q2, k1, k2)
    >>> int(loss_fn.queue_ptr)
    4
    """

    def __init__(
        self,
        dim,
        queue_size=65536,
        temperature=0.2,
        n_views=2,
        margin=None,
        prevent_class_collisions=False,
    ):
        super().__init__()
        if n_views != 2:
            raise ValueError(
                "MoCoLoss implements the symmetric 2-view MoCo v2+, got "
                f"n_views={n_views}"
            )
        if queue_size < 1 or dim < 1:
            raise ValueError(
                f"dim and queue_size must be >= 1, got {dim}, {queue_size}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.dim = dim
        self.queue_size = queue_size
        self.temperature = float(temperature)
        self.n_views = n_views
        self.prevent_class_collisions = prevent_class_collisions
        self.margin_fn = build_margin(margin, 1.0 / self.temperature)
        self.register_buffer(
            "queue", F.normalize(torch.randn(n_views, queue_size, dim), dim=-1)
        )
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        if prevent_class_collisions:
            # -1 = no label (initial random entries never collide)
            self.register_buffer(
                "queue_labels", torch.full((queue_size,), -1, dtype=torch.long)
            )
        self.last_metrics = {}

    def update_margin(self, epoch, total_epochs):
        """Cosine margin ramp (``cosine_margin_schedule``, epoch from 0)."""
        return self.margin_fn.update_margin(epoch, total_epochs)

    def _check(self, q1, q2, k1, k2, labels):
        shapes = [tuple(t.shape) for t in (q1, q2, k1, k2)]
        if any(len(s) != 2 for s in shapes) or len(set(shapes)) != 1:
            raise ValueError(f"q1, q2, k1, k2 must all be (N, D), got {shapes}")
        n, d = shapes[0]
        if d != self.dim:
            raise ValueError(f"embedding dim {d} != MoCoLoss dim {self.dim}")
        if n < 2:
            raise ValueError(f"MoCoLoss needs a batch of >= 2, got N={n}")
        if self.prevent_class_collisions:
            if labels is None or tuple(labels.shape) != (n,):
                raise ValueError(
                    "prevent_class_collisions needs labels of shape (N,), got "
                    f"{None if labels is None else tuple(labels.shape)}"
                )
            if (labels < 0).any():
                raise ValueError("class labels must be >= 0")

    @staticmethod
    def _cosines(q, k, queue):
        """Positive ``(N, 1)``, queue ``(N, Q)`` cosines; raw query norms ``(N,)``."""
        q = q.float()
        norms = q.norm(dim=-1)  # (N,) un-normalised query norms (MagFace/AdaFace)
        qn = F.normalize(q, dim=-1)
        kn = F.normalize(k.detach().float(), dim=-1)
        pos = (qn * kn).sum(dim=-1, keepdim=True)  # (N, 1)
        neg = qn @ queue.t()  # (N, Q)
        return pos, neg, norms

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, q1, q2, k1, k2, labels=None):
        """Symmetric loss, then enqueue the keys.

        Both directions are stacked into ``2N`` rows so the margin (and its EMA
        statistics) is applied once per step; the mean over the ``2N`` rows equals
        ``(L(q1, k2, queue[1]) + L(q2, k1, queue[0])) / 2``.

        Arguments
        ---------
        q1, q2 : torch.Tensor
            ``(N, D)`` un-normalised queries (online encoder + projector) of views 1, 2.
        k1, k2 : torch.Tensor
            ``(N, D)`` keys (momentum encoder, no gradient needed) of views 1, 2.
        labels : torch.Tensor or None
            ``(N,)`` long class labels for ``prevent_class_collisions``.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        self._check(q1, q2, k1, k2, labels)
        queue = self.queue.detach().clone()  # enqueue below must not alter the graph
        pos_1, neg_1, norms_1 = self._cosines(q1, k2, queue[1])
        pos_2, neg_2, norms_2 = self._cosines(q2, k1, queue[0])
        pos = torch.cat([pos_1, pos_2])  # (2N, 1)
        neg = torch.cat([neg_1, neg_2])  # (2N, Q)
        norms = torch.cat([norms_1, norms_2])  # (2N,)
        pos_l, neg_l, reg = self.margin_fn(pos, neg, norms)
        neg_l = neg_l / self.temperature
        if self.prevent_class_collisions:
            lab = torch.cat([labels, labels]).long()  # (2N,)
            collide = lab[:, None] == self.queue_labels[None, :]  # (2N, Q)
            neg_l = neg_l.masked_fill(collide, float("-inf"))
        logits = torch.cat([pos_l / self.temperature, neg_l], dim=1)  # (2N, 1 + Q)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target) + reg

        with torch.no_grad():
            finite = torch.isfinite(logits)
            prob = torch.softmax(logits, dim=1)
            plogp = torch.where(prob > 0, prob * torch.log(prob), 0.0)
            self.last_metrics = {  # detached tensors: no host sync per step
                "loss": loss.detach(),
                "accuracy": (logits.argmax(dim=1) == 0).float().mean(),
                "entropy": (-plogp.sum(dim=1)).mean(),
                "logits_std": logits[finite].std(),
                "margin": self.margin_fn.stats.get(
                    "magface_margin",
                    float(self.margin_fn.effective_margin(self.queue_size)),
                ),
                **self.margin_fn.stats,
            }
        self.enqueue(k1, k2, labels)
        return loss

    @torch.no_grad()
    def enqueue(self, k1, k2, labels=None):
        """Gather keys from every rank and write them FIFO into the ring queues.

        Arguments
        ---------
        k1, k2 : torch.Tensor
            ``(N, D)`` keys of views 1 and 2 (normalised here).
        labels : torch.Tensor or None
            ``(N,)`` labels (stored when ``prevent_class_collisions``).
        """
        keys = torch.stack([k1, k2]).detach().float()  # (2, N, D)
        keys = F.normalize(keys, dim=-1)
        keys = torch.stack([dist_utils.gather(k, grad=False) for k in keys])  # (2,B,D)
        b = keys.shape[1]
        q = self.queue_size
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(b, device=keys.device)) % q  # (B,)
        start = max(0, b - q)  # a batch larger than the queue keeps its last Q keys
        self.queue[:, idx[start:]] = keys[:, start:].to(self.queue.dtype)
        if self.prevent_class_collisions:
            if labels is None:
                raise ValueError("prevent_class_collisions needs labels to enqueue")
            all_labels = dist_utils.gather(labels.detach().long(), grad=False)  # (B,)
            self.queue_labels[idx[start:]] = all_labels[start:]
        self.queue_ptr.fill_((ptr + b) % q)
