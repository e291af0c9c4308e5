"""Local Info Max (LIM) and its global variant GIM (arXiv 1812.00271).

LIM maximises a lower bound of the mutual information between the embeddings of two
chunks of the same utterance: a critic (here the cosine similarity, as in sslsv) must
separate samples of the joint distribution (two chunks of the same utterance) from
samples of the product of marginals (chunks of two *different* utterances). Three
objectives from the paper: binary cross-entropy (``"bce"``, the paper's best), the
MINE / Donsker-Varadhan bound (``"mine"``) and noise-contrastive estimation
(``"nce"``).

Negatives are pairs ``(z1_i, z2_j)`` with ``j`` a *different* sample of the (gathered)
batch: either ``n_negatives`` distinct random columns per anchor drawn from the
non-diagonal offsets ``1..M-1`` (so a negative can never be the positive, unlike
sslsv which samples a row with replacement and may draw the positive itself), or
every off-diagonal pair (``negatives="all"``).

NCE denominator (``nce_denominator``): by default (``"own"``) anchor ``i``'s
denominator holds its positive and *its own* negatives,
``-mean_i[s(i,i) - log(exp s(i,i) + sum_{j in N(i)} exp s(i,j))]``, the usual
InfoNCE form (Oord et al., arXiv 1807.03748) in which each anchor contrasts its
positive against the negatives drawn for it. sslsv's LIM instead adds the negatives
of the *whole* local batch to every anchor's denominator,
``-mean_i[s(i,i) - log(exp s(i,i) + sum_k sum_{j in N(k)} exp s(k,j))]``: the
negative term is shared by all anchors (with one negative per anchor it sums ``N``
scores instead of one), so anchor ``i``'s term also pushes apart the negative pairs
of the other anchors, and the denominator grows with the batch: with cosine scores
in ``[-1, 1]`` and one negative per anchor, the loss is bounded below by
``log(1 + N e^-2)`` instead of ``log(1 + e^-2)``. ``nce_denominator="batch"``
reproduces that form; as in sslsv the sum runs over the anchors of the local rank
(their negatives are still drawn from the gathered batch).

GIM (:class:`GIMLoss`): the *global* variant, as defined by the PASE+ workers
(Ravanelli et al., arXiv 2001.09239, "local info max" / "global info max" workers,
which reuse the LIM objective of arXiv 1812.00271): LIM contrasts *local*
representations (single encoder frames / short chunks), GIM contrasts *global* ones,
i.e. encoder frames averaged over a long window (2 s in PASE+). Anchor and positive
are window averages from the same utterance, the negative a window average from
another utterance of the batch; critic and objectives are LIM's. On already-pooled
utterance embeddings (the sslsv setting) LIM and GIM coincide, so :class:`GIMLoss`
takes frame-level encoder outputs ``(B, C, T)``. Note: only the abstract of
arXiv 1812.00271 was retrievable here; the GIM definition follows the PASE+ worker
description and should be double-checked against the paper text.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslsv_sb.distributed import gather, rank

OBJECTIVES = ("bce", "nce", "mine")
NCE_DENOMINATORS = ("own", "batch")


def lim_objective(pos, neg, objective, nce_denominator="own"):
    """Negated MI lower bound from critic scores.

    Arguments
    ---------
    pos : torch.Tensor
        ``(P,)`` scores of positive pairs.
    neg : torch.Tensor
        ``(P, n)`` scores of the negatives of each positive.
    objective : str
        ``"bce"``: ``-[mean log s(pos) + mean log(1 - s(neg))]``;
        ``"mine"``: ``-[mean(pos) - log mean exp(neg)]``;
        ``"nce"``: ``-mean_i(pos_i - log(exp(pos_i) + sum_j exp(neg_ij)))``.
    nce_denominator : str
        ``"nce"`` only. ``"own"``: anchor ``i``'s denominator sums its own row
        ``neg[i]``; ``"batch"`` (sslsv's form): every anchor's denominator sums all
        ``P * n`` negative scores of ``neg``.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    if objective == "bce":
        # log(1 - sigmoid(x)) = logsigmoid(-x), stable without clamping
        return -(F.logsigmoid(pos).mean() + F.logsigmoid(-neg).mean())
    if objective == "mine":
        return -(
            pos.mean() - (torch.logsumexp(neg.reshape(-1), 0) - math.log(neg.numel()))
        )
    if objective == "nce":
        if nce_denominator == "batch":
            # log(exp(pos_i) + sum_all exp(neg)), stable: logaddexp with one lse
            log_den = torch.logaddexp(pos, torch.logsumexp(neg.reshape(-1), 0))
            return -(pos - log_den).mean()
        if nce_denominator != "own":
            raise ValueError(
                f"unknown NCE denominator {nce_denominator!r}, "
                f"expected one of {NCE_DENOMINATORS}"
            )
        return -(
            pos - torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)
        ).mean()
    raise ValueError(
        f"unknown LIM objective {objective!r}, expected one of {OBJECTIVES}"
    )


class LIMLoss(nn.Module):
    """LIM loss (arXiv 1812.00271) on two chunk embeddings per utterance.

    Arguments
    ---------
    objective : str
        ``"bce"`` (paper default), ``"nce"`` or ``"mine"``.
    negatives : str
        ``"random"``: ``n_negatives`` distinct other samples per anchor (paper:
        one random other sentence); ``"all"``: every other sample of the batch.
    n_negatives : int
        Negatives per anchor for ``negatives="random"`` (clipped to ``M - 1``).
    nce_denominator : str
        ``"own"`` (default): each anchor's NCE denominator holds its own negatives;
        ``"batch"``: the negatives of every local anchor (sslsv's LIM ``nce``; see
        the module docstring). Ignored by ``"bce"`` and ``"mine"``.

    Example
    -------
    >>> loss = LIMLoss()
    >>> out = loss(torch.randn(8, 16), torch.randn(8, 16))
    >>> sorted(out)
    ['loss', 'neg_sim', 'pos_sim']
    """

    def __init__(
        self, objective="bce", negatives="random", n_negatives=1, nce_denominator="own"
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(
                f"LIMLoss: objective must be one of {OBJECTIVES}, got {objective!r}"
            )
        if negatives not in ("random", "all"):
            raise ValueError(
                f"LIMLoss: negatives must be 'random' or 'all', got {negatives!r}"
            )
        if n_negatives < 1:
            raise ValueError(f"LIMLoss: n_negatives must be >= 1, got {n_negatives}")
        if nce_denominator not in NCE_DENOMINATORS:
            raise ValueError(
                f"LIMLoss: nce_denominator must be one of {NCE_DENOMINATORS}, "
                f"got {nce_denominator!r}"
            )
        self.nce_denominator = nce_denominator
        self.objective = objective
        self.negatives = negatives
        self.n_negatives = n_negatives

    def negative_columns(self, own, m, generator=None):
        """Columns of the negatives of each anchor, never its own column.

        Arguments
        ---------
        own : torch.Tensor
            ``(P,)`` column of each anchor's positive in ``[0, M)``.
        m : int
            Number of candidates ``M`` (gathered batch).
        generator : torch.Generator, optional
            Random source for ``negatives="random"``.

        Returns
        -------
        torch.Tensor
            ``(P, n)`` long columns, all different from ``own`` and distinct per row.
        """
        p = own.shape[0]
        if self.negatives == "all" or self.n_negatives >= m - 1:
            offsets = torch.arange(1, m, device=own.device).expand(p, m - 1)  # (P, M-1)
        else:
            # n distinct offsets in 1..M-1 per row: top-n of uniform noise
            noise = torch.rand(p, m - 1, generator=generator, device=own.device)
            offsets = noise.topk(self.n_negatives, dim=1).indices + 1  # (P, n)
        return (own[:, None] + offsets) % m

    def _loss(self, anchors, candidates, own):
        """``anchors (P, D)``, ``candidates (M, D)``, ``own (P,)`` -> loss dict."""
        if candidates.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 utterances in the global batch"
            )
        a = F.normalize(anchors.float(), dim=-1)  # (P, D)
        c = F.normalize(candidates.float(), dim=-1)  # (M, D)
        sims = a @ c.T  # (P, M)
        pos = sims.gather(1, own[:, None])[:, 0]  # (P,)
        neg = sims.gather(1, self.negative_columns(own, c.shape[0]))  # (P, n)
        loss = lim_objective(pos, neg, self.objective, self.nce_denominator)
        return {
            "loss": loss,
            "pos_sim": pos.detach().mean(),
            "neg_sim": neg.detach().mean(),
        }

    def forward(self, z1, z2):
        """Compute the loss.

        Arguments
        ---------
        z1 : torch.Tensor
            ``(N, D)`` embeddings of chunk 1.
        z2 : torch.Tensor
            ``(N, D)`` embeddings of chunk 2 of the same utterances.

        Returns
        -------
        dict
            ``"loss"`` and detached ``"pos_sim"`` / ``"neg_sim"`` (mean cosines).
        """
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"LIMLoss expects z1, z2 of the same shape (N, D), "
                f"got {tuple(z1.shape)} "
                f"and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        own = torch.arange(n, device=z1.device) + rank() * n  # (N,)
        return self._loss(z1, gather(z2), own)


class GIMLoss(LIMLoss):
    """Global Info Max (GIM): LIM on long-window averages of encoder frames.

    Arguments
    ---------
    objective, negatives, n_negatives, nce_denominator
        As :class:`LIMLoss`.
    window : int
        Frames averaged into one global representation (2 s in PASE+, i.e. 200 frames
        at a 10 ms hop); clipped to the sequence length.

    Example
    -------
    >>> loss = GIMLoss(objective="nce", negatives="all", window=4)
    >>> out = loss(torch.randn(5, 16, 20))
    >>> out["loss"].shape
    torch.Size([])
    """

    def __init__(
        self,
        objective="bce",
        negatives="random",
        n_negatives=1,
        window=200,
        nce_denominator="own",
    ):
        super().__init__(objective, negatives, n_negatives, nce_denominator)
        if window < 1:
            raise ValueError(f"GIMLoss: window must be >= 1, got {window}")
        self.window = window

    @staticmethod
    def window_means(frames, starts, window):
        """Mean of ``frames[b, :, s_b : s_b + window]`` for every row.

        Arguments
        ---------
        frames : torch.Tensor
            ``(B, C, T)``.
        starts : torch.Tensor
            ``(B,)`` long window starts in ``[0, T - window]``.
        window : int
            Window length.

        Returns
        -------
        torch.Tensor
            ``(B, C)``.
        """
        cs = F.pad(frames.float().cumsum(dim=2), (1, 0))  # (B, C, T+1)
        idx = torch.stack([starts, starts + window], dim=1)  # (B, 2)
        ends = cs.gather(2, idx[:, None, :].expand(-1, cs.shape[1], -1))  # (B, C, 2)
        return (ends[..., 1] - ends[..., 0]) / window

    def forward(self, frames, frames2=None, generator=None):
        """Compute the loss.

        Arguments
        ---------
        frames : torch.Tensor
            ``(B, C, T)`` frame-level encoder outputs (anchor windows).
        frames2 : torch.Tensor, optional
            ``(B, C, T2)`` second crop of the same utterances (positive windows);
            by default the positive window is drawn from ``frames``.
        generator : torch.Generator, optional
            Random source for the window positions.

        Returns
        -------
        dict
            ``"loss"`` and detached ``"pos_sim"`` / ``"neg_sim"``.
        """
        frames2 = frames if frames2 is None else frames2
        if (
            frames.dim() != 3
            or frames2.dim() != 3
            or frames.shape[:2] != frames2.shape[:2]
        ):
            raise ValueError(
                "GIMLoss expects frame-level outputs (B, C, T), got "
                f"{tuple(frames.shape)} and {tuple(frames2.shape)}"
            )
        b, dev = frames.shape[0], frames.device
        w = min(self.window, frames.shape[2], frames2.shape[2])
        s1 = torch.randint(0, frames.shape[2] - w + 1, (b,), generator=generator)
        s2 = torch.randint(0, frames2.shape[2] - w + 1, (b,), generator=generator)
        z1 = self.window_means(frames, s1.to(dev), w)  # (B, C)
        z2 = self.window_means(frames2, s2.to(dev), w)  # (B, C)
        own = torch.arange(b, device=dev) + rank() * b  # (B,)
        return self._loss(z1, gather(z2), own)
