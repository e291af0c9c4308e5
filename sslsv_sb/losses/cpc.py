"""Contrastive Predictive Coding for speaker embeddings (arXiv 1807.03748).

Two pieces:

* :class:`CPCHead` — the autoregressive aggregator (GRU/LSTM) over encoder frames and
  ``k`` linear future-step predictors ``W_k``; its final hidden state is the utterance
  embedding (:meth:`CPCHead.embed`). It lives here because it is only meaningful with
  :class:`CPCLoss` (the lead may move it to ``models/heads.py``).
* :class:`CPCLoss` — mean over the prediction steps (and context positions and
  directions) of InfoNCE between ``W_k c_t`` and the true future frame ``z_{t+k}``;
  negatives are the same-step targets of the other samples of the (gathered) batch;
  raw dot products with temperature 1 by default (sslsv's setting), both configurable.

Pair construction (``CPCHead(mode=...)``):

* ``"same"`` (default, the paper's design): context and future frames come from the
  same sequence. With ``context="all"`` every position ``t`` with ``t + k < T`` is a
  context (``c_t`` summarises ``z_0..z_t``), with ``context="last"`` only the last one
  (``c`` over ``z_0..z_{T-k-1}``, predicting the last ``k`` frames).
* ``"two_crop"`` (sslsv's design): the context is the aggregator state over crop 1
  without its last ``k`` frames and the targets are the last ``k`` frames of crop 2
  (another random crop of the same utterance), so the model predicts frames of a
  different segment of the utterance.

Bidirectional: a second aggregator and predictor set run on the time-reversed
sequences; the loss averages both directions and the embedding concatenates both
final states.
"""

import torch
from torch import nn

from sslsv_sb.distributed import gather, rank
from sslsv_sb.losses.infonce import info_nce


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
        ``"same"`` (paper) or ``"two_crop"`` (sslsv); see the module docstring.
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
        if aggregator not in rnns:
            raise ValueError(
                f"CPCHead: aggregator must be 'gru' or 'lstm', got {aggregator!r}"
            )
        if mode not in ("same", "two_crop"):
            raise ValueError(
                f"CPCHead: mode must be 'same' or 'two_crop', got {mode!r}"
            )
        if context not in ("all", "last"):
            raise ValueError(
                f"CPCHead: context must be 'all' or 'last', got {context!r}"
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


class CPCLoss(nn.Module):
    """CPC InfoNCE loss (arXiv 1807.03748) over predictions of :class:`CPCHead`.

    For each context position / direction ``s`` and step ``j``, sample ``b``'s
    prediction must pick its own future frame among the same-``(s, j)`` future frames
    of every sample of the gathered batch. The loss is the mean over all ``(s, j, b)``.

    Arguments
    ---------
    temperature : float
        Logit temperature (1 = sslsv / paper log-bilinear score).
    normalize : bool
        Cosine instead of raw dot-product scores.

    Example
    -------
    >>> head, loss = CPCHead(16, hidden=8, n_predict=2), CPCLoss()
    >>> out = loss(*head(torch.randn(4, 16, 10)))
    >>> out["loss"].shape
    torch.Size([])
    """

    def __init__(self, temperature=1.0, normalize=False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"CPCLoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, predictions, targets):
        """Compute the loss.

        Arguments
        ---------
        predictions : torch.Tensor
            ``(B, S, k, C)`` from :meth:`CPCHead.forward`.
        targets : torch.Tensor
            ``(B, S, k, C)`` true future frames.

        Returns
        -------
        dict
            ``"loss"`` (scalar) and ``"accuracy"`` (detached top-1 accuracy).
        """
        if predictions.dim() != 4 or predictions.shape != targets.shape:
            raise ValueError(
                "CPCLoss expects predictions and targets of the same shape "
                "(B, S, k, C), "
                f"got {tuple(predictions.shape)} and {tuple(targets.shape)}"
            )
        b, s, k, c = predictions.shape
        cands = gather(targets.float())  # (B * W, S, k, C)
        if cands.shape[0] < 2:
            raise ValueError("CPCLoss needs at least 2 samples in the global batch")
        anchors = (
            predictions.float().permute(1, 2, 0, 3).reshape(s * k, b, c)
        )  # (S*k, B, C)
        cands = cands.permute(1, 2, 0, 3).reshape(s * k, -1, c)  # (S*k, B*W, C)
        labels = torch.arange(b, device=predictions.device) + rank() * b  # (B,)
        loss, acc = info_nce(anchors, cands, labels, self.temperature, self.normalize)
        return {"loss": loss, "accuracy": acc}
