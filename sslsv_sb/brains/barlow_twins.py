"""Barlow Twins for speaker embeddings (Zbontar et al., arXiv 2103.03230).

sslsv's speaker headline ``barlowtwins_proj-2048-BN-R-2048-BN-R-512_lambda-0.005``:
projector 2048-2048-512, lambda 5e-3, loss scale 0.025
(``hparams/barlow_twins_ecapa.yaml``).
"""

from sslsv_sb.brains.siamese import SiameseBrain


class BarlowTwinsBrain(SiameseBrain):
    """Barlow Twins (arXiv 2103.03230): ``projector`` (e.g.
    :class:`~sslsv_sb.models.heads.BarlowTwinsProjectionHead`) and ``loss``
    (:class:`~sslsv_sb.losses.barlow_twins.BarlowTwinsLoss`, cross-correlation of the
    global batch under DDP); the ``on_diag`` / ``off_diag`` terms are logged per
    epoch. Each view is a separate encoder pass
    (:class:`~sslsv_sb.brains.siamese.SiameseBrain`).

    Example
    -------
    See ``hparams/barlow_twins_ecapa.yaml``.
    """

    method_name = "barlow_twins"


__all__ = ["BarlowTwinsBrain"]
