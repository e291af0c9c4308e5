"""VIbCReg for speaker embeddings (Lee & Aune, arXiv 2109.00783).

VICReg (arXiv 2105.04906) with a correlation-based covariance term
(:class:`~sslsv_sb.losses.vibcreg.VIbCRegLoss`) and an ``IterNorm`` at the end of the
projector (:class:`~sslsv_sb.models.heads.VIbCRegProjectionHead`). sslsv: weights
1 / 1 / 8, IterNorm 64 groups, T = 5 (``hparams/vibcreg_ecapa.yaml``).
"""

from sslsv_sb.brains.siamese import SiameseBrain


class VIbCRegBrain(SiameseBrain):
    """VIbCReg (arXiv 2109.00783): ``projector`` (VIbCReg head with IterNorm) and
    ``loss`` (:class:`~sslsv_sb.losses.vibcreg.VIbCRegLoss`).

    Example
    -------
    See ``hparams/vibcreg_ecapa.yaml``.
    """

    method_name = "vibcreg"
