"""SimCLR with DINO-style multi-crop ("SimCLR multi-views", sslsv).

Multi-crop (Caron et al., SwAV arXiv 2006.09882 / DINO arXiv 2104.14294) applied to
SimCLR (arXiv 2002.05709) with the margin NT-Xent of arXiv 2404.14913: every sample
gives 2 long ("global") and ``V_l`` short ("local") crops; each local crop is an
anchor whose positives are the 2 global crops of its utterance (multi-positive,
target uniform over the 2) and whose negatives are the global crops of every other
utterance of the global batch (``2 (N W - 1)``).
"""

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.margins import MarginScheduleMixin


class SimCLRMultiViewsBrain(MarginScheduleMixin, SSLBrain):
    """Local crops as anchors against the 2 global crops (multi-positive NT-Xent).

    hparams: ``view_groups: {views: [2, global_len], local_views: [V_l, local_len]}``
    (the sampler reads crops of exactly these lengths, so e.g. 2 x 4 s global and
    4 x 2 s local crops need no padding or cutting), ``margin_scheduler``
    (:class:`~sslsv_sb.brains.margins.MarginScheduleMixin`).

    ``modules``: the encoder modules, optional ``projector``, ``loss``
    (:class:`~sslsv_sb.losses.margins.MarginNTXentLoss`, called as
    ``loss(anchors=local (N, V_l, D), candidates=global (N, 2, D))``).

    The global and local crops go through the same encoder in two passes (one per
    length: ``2B`` then ``V_l B`` rows), each view-major, augmented per crop.

    Example
    -------
    See ``hparams/simclr_multiviews_ecapa.yaml`` and
    ``tests/brains/test_contrastive_brains.py``.
    """

    method_name = "simclr_multiviews"

    def _encode_group(self, views, stage):
        """``(B, V, L)`` crops -> ``(B, V, D')`` embeddings (+ projector)."""
        b, v, _ = views.shape
        x = self.augment(self.view_major(views), stage)  # (V*B, L)
        y = self.embed(x)  # (V*B, D)
        if "projector" in self.modules:
            y = self.modules.projector(y)
        return y.reshape(v, b, -1).transpose(0, 1)  # (B, V, D')

    def compute_forward(self, batch, stage):
        """Embed the global and local crops.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.views`` ``(B, 2, L_g)`` and ``batch.local_views`` ``(B, V_l, L_l)``.
        stage : sb.Stage
            Augmentation is applied in TRAIN.

        Returns
        -------
        tuple of torch.Tensor
            ``(z_local (B, V_l, D'), z_global (B, 2, D'))``, un-normalised.
        """
        global_views = self.get_views(batch, "views", n_views=2)  # (B, 2, L_g)
        local_views = self.get_views(batch, "local_views")  # (B, V_l, L_l)
        z_global = self._encode_group(global_views, stage)
        z_local = self._encode_group(local_views, stage)
        return z_local, z_global

    def compute_objectives(self, predictions, batch, stage):
        """Multi-positive margin NT-Xent: local anchors vs global candidates.

        Arguments
        ---------
        predictions : tuple of torch.Tensor
            ``(z_local (B, V_l, D'), z_global (B, 2, D'))``.
        batch : PaddedBatch
            Unused.
        stage : sb.Stage
            Unused (the loss's metrics are recorded by the base Brain).

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        z_local, z_global = predictions
        return self.modules.loss(z_local, z_global)
