"""Supervised AAM-softmax (ArcFace) baseline built from SpeechBrain parts.

ArcFace (arXiv 1801.07698), used for speakers as AAM-softmax (arXiv 1906.07317):
``loss = CE(s * [cos(theta_y + m), cos(theta_j)_{j != y}], y)`` with ``s = 30``,
``m = 0.2`` (sslsv's ``Supervised`` defaults).

SpeechBrain parts:

* ``speechbrain.lobes.models.ECAPA_TDNN.Classifier`` (``lin_blocks=0``): a bias-free
  weight ``(C, D)`` (xavier-uniform) and ``normalize(x) @ normalize(W).T``. Its shape
  convention is ``(B, 1, D) -> (B, 1, C)``; ``AAMSoftmaxLoss`` hides it behind
  ``(B, D) -> (B, C)``.
* ``speechbrain.nnet.losses.LogSoftmaxWrapper(AdditiveAngularMargin(margin, scale))``:
  KL divergence against one-hot targets summed and divided by the number of targets,
  i.e. the mean cross-entropy.

``AdditiveAngularMargin`` (speechbrain 1.1) clamps cosines to ``+-(1 - 1e-7)`` and,
with ``easy_margin=False`` (default, used here), replaces ``cos(theta + m)`` by
``cos(theta) - m sin(pi - m)`` where ``theta + m > pi`` (``cos <= cos(pi - m)``),
exactly the ArcFace reference implementation (insightface) and the same as sslsv;
``easy_margin=True`` applies the margin only where ``cos > 0``.
"""

import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn


class AAMSoftmaxLoss(nn.Module):
    """AAM-softmax over a cosine classifier (ArcFace, arXiv 1801.07698).

    Arguments
    ---------
    in_dim : int
        Embedding dimension ``D``.
    n_classes : int
        Number of classes ``C`` (speakers).
    margin : float
        Additive angular margin ``m`` (0.2).
    scale : float
        Logit scale ``s`` (30).
    easy_margin : bool
        SpeechBrain's easy-margin variant (off, like the ArcFace reference).

    Example
    -------
    >>> loss_fn = AAMSoftmaxLoss(in_dim=8, n_classes=3)
    >>> loss = loss_fn(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    >>> loss.shape, loss_fn.logits(torch.randn(4, 8)).shape
    (torch.Size([]), torch.Size([4, 3]))
    """

    def __init__(self, in_dim, n_classes, margin=0.2, scale=30.0, easy_margin=False):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(
                f"AAMSoftmaxLoss needs in_dim >= 1 and n_classes >= 2, got {in_dim}, "
                f"{n_classes}"
            )
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.margin = float(margin)
        self.scale = float(scale)
        self.classifier = Classifier(
            input_size=in_dim, lin_blocks=0, out_neurons=n_classes
        )
        self.aam = AdditiveAngularMargin(
            margin=self.margin, scale=self.scale, easy_margin=easy_margin
        )
        self.loss_fn = LogSoftmaxWrapper(self.aam)
        self.last_metrics = {}

    def _check(self, emb):
        if emb.dim() != 2 or emb.shape[1] != self.in_dim:
            raise ValueError(
                f"embeddings must be (B, {self.in_dim}), got {tuple(emb.shape)}"
            )

    @fwd_default_precision(cast_inputs=torch.float32)
    def cosine(self, emb):
        """Cosines to the class weights.

        Arguments
        ---------
        emb : torch.Tensor
            ``(B, D)`` embeddings (un-normalised).

        Returns
        -------
        torch.Tensor
            ``(B, C)`` cosines.
        """
        self._check(emb)
        return self.classifier(emb.float().unsqueeze(1)).squeeze(1)  # (B, C)

    def logits(self, emb):
        """Prediction logits ``s * cos`` without margin, ``(B, D) -> (B, C)``."""
        return self.scale * self.cosine(emb)

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, emb, labels):
        """Compute the AAM-softmax loss.

        Arguments
        ---------
        emb : torch.Tensor
            ``(B, D)`` embeddings.
        labels : torch.Tensor
            ``(B,)`` class indices in ``[0, C)``.

        Returns
        -------
        torch.Tensor
            Scalar mean cross-entropy. ``last_metrics["accuracy"]`` is the top-1
            accuracy of the margin-free prediction (``logits``), which is what a
            downstream classifier uses (sslsv scores the margin-applied logits).
        """
        self._check(emb)
        if emb.shape[0] < 2:
            raise ValueError(
                f"AAMSoftmaxLoss needs a batch of >= 2, got {emb.shape[0]}"
            )
        if labels.shape != (emb.shape[0],):
            raise ValueError(
                f"labels must be ({emb.shape[0]},), got {tuple(labels.shape)}"
            )
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be in [0, {self.n_classes})")
        cos = self.cosine(emb)  # (B, C)
        loss = self.loss_fn(cos.unsqueeze(1), labels.unsqueeze(1))  # (B,1,C), (B,1)
        with torch.no_grad():
            acc = (cos.argmax(dim=1) == labels).float().mean()
            self.last_metrics = {"loss": loss.detach(), "accuracy": acc}  # no host sync
        return loss
