"""Contrastive Predictive Coding for speaker embeddings (van den Oord et al.,
arXiv 1807.03748).

A frame-level encoder (Fast ResNet-34 with ``pooling: none``, sslsv's
``resnet34 pooling: false``) produces ``(B, C, T')`` frames; a GRU/LSTM aggregator
summarises them and ``k`` linear predictors predict future frames
(:class:`~sslsv_sb.models.heads.CPCHead`); InfoNCE over the gathered batch is the loss
(:class:`~sslsv_sb.losses.cpc.CPCLoss`). The utterance embedding is the
aggregator's final hidden state (concatenated directions when bidirectional).

:class:`CPCEncoder` bundles the frame encoder and the head into the module stored as
``embedding_model``: its ``forward(feats, lengths)`` returns the utterance embedding,
so evaluation, export (``embedding_model.ckpt``) and the two-stage pipeline treat a
CPC model like any other encoder; the training forward (``n_views > 0``) returns the
head's predictions in the *same* call, so DDP sees one forward per step.

sslsv's headline ``cpc_t-4_agg-GRU-1-256``: ResNet-34 frames, 4 future steps,
GRU 1 x 256, temperature 1 (raw dot products), two-crop pairs; 12.77 % EER /
0.8033 minDCF on VoxCeleb1-O (``hparams/cpc_resnet34.yaml``).
"""

import speechbrain as sb
import torch
from torch import nn

from sslsv_sb.brains.base import SSLBrain


class CPCEncoder(nn.Module):
    """Frame-level encoder + CPC aggregator as one utterance encoder.

    Arguments
    ---------
    encoder : torch.nn.Module
        ``(B, T, F), lengths -> (B, C, T')`` frame-level encoder.
    head : sslsv_sb.models.heads.CPCHead
        Aggregator and predictors.

    Example
    -------
    >>> from sslsv_sb.models.heads import CPCHead
    >>> class Frames(nn.Module):
    ...     def forward(self, x, lengths=None):
    ...         return x.transpose(1, 2)
    >>> enc = CPCEncoder(Frames(), CPCHead(8, hidden=6, n_predict=2))
    >>> enc(torch.randn(3, 10, 8)).shape
    torch.Size([3, 6])
    >>> [p.shape for p in enc(torch.randn(6, 10, 8), n_views=2)[0]]
    [torch.Size([3, 8, 2, 8]), torch.Size([3, 8, 2, 8])]
    """

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.out_dim = head.out_dim

    def forward(self, feats, lengths=None, n_views=0):
        """Utterance embeddings, or CPC predictions for training.

        Arguments
        ---------
        feats : torch.Tensor
            ``(N, T, F)`` features; with ``n_views = V > 0``, ``N = V * B`` rows in
            view-major order.
        lengths : torch.Tensor, optional
            ``(N,)`` relative lengths.
        n_views : int
            0: return ``(N, hidden * n_dirs)`` embeddings. ``V > 0``: return a list
            of ``(predictions, targets)`` pairs, each ``(B, S, k, C)``: one pair
            (crop 1 predicts crop 2) in ``two_crop`` mode, one per view in ``same``
            mode.
        """
        frames = self.encoder(feats, lengths)  # (N, C, T')
        if frames.dim() != 3:
            raise ValueError(
                "CPC needs a frame-level encoder output (N, C, T) (e.g. ResNet-34 "
                f"with pooling: none), got {tuple(frames.shape)}"
            )
        if not n_views:
            return self.head.embed(frames, lengths)
        chunks = frames.chunk(n_views)  # V x (B, C, T')
        if self.head.mode == "two_crop":
            if n_views != 2:
                raise ValueError(f"two_crop CPC needs 2 views, got {n_views}")
            return [self.head(chunks[0], chunks[1])]
        return [self.head(c) for c in chunks]


class CPCBrain(SSLBrain):
    """CPC (arXiv 1807.03748).

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``
    (a :class:`CPCEncoder`), ``augment`` (optional) and ``loss``
    (:class:`~sslsv_sb.losses.cpc.CPCLoss`). ``view_groups: {views: [V, L]}``
    (``V = 2`` for ``two_crop``; ``same`` mode takes any ``V >= 1`` and averages the
    per-view losses, never contrasting two crops of one utterance).

    DDP: the loss all-gathers the targets (negatives from the global batch); one
    forward of ``embedding_model`` per step.

    Example
    -------
    See ``hparams/cpc_resnet34.yaml`` and ``tests/brains/test_frame_level_brains.py``.
    """

    method_name = "cpc"

    def features(self, wavs):
        """``(N, L)`` waveforms -> normalised ``(N, T, F)`` features (fp32)."""
        lengths = torch.ones(wavs.shape[0], device=wavs.device)
        with torch.autocast(device_type=self.device_type, enabled=False):
            feats = self.modules.compute_features(wavs.float())
            return self.modules.mean_var_norm(feats, lengths), lengths

    def compute_forward(self, batch, stage):
        """List of ``(predictions, targets)`` pairs, each ``(B, S, k, C)``."""
        views = self.get_views(batch)  # (B, V, L)
        x = self.augment(self.view_major(views), stage)  # (V*B, L)
        feats, lengths = self.features(x)
        return self.modules.embedding_model(feats, lengths, n_views=views.shape[1])

    def compute_objectives(self, predictions, batch, stage):
        """Mean CPC InfoNCE over the prediction pairs; records the accuracy."""
        outs = [self.modules.loss(p, t) for p, t in predictions]
        loss = sum(o["loss"] for o in outs) / len(outs)
        if stage == sb.Stage.TRAIN:  # float64 mean, read back once per epoch
            acc = sum(o["accuracy"].detach().double() for o in outs) / len(outs)
            self.record(accuracy=acc)
        return loss


__all__ = ["CPCBrain", "CPCEncoder"]
