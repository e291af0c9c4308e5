"""VICReg for speaker embeddings (Bardes et al., arXiv 2105.04906).

Two views -> encoder -> expander (projector) -> variance + invariance + covariance
loss on the global batch (:class:`~sslsv_sb.losses.vicreg.VICRegLoss`).
sslsv's speaker headline ``vicreg_enc-ECAPATDNN-1024_proj-2048-BN-R-2048-BN-R-512_inv-
1.0_var-1.0_cov-0.1``: projector 2048-2048-512, weights 1 / 1 / 0.1
(``hparams/vicreg_ecapa.yaml``).
"""

from sslsv_sb.brains.siamese import SiameseBrain


class VICRegBrain(SiameseBrain):
    """VICReg (arXiv 2105.04906): ``projector`` (e.g.
    :class:`~sslsv_sb.models.heads.VICRegProjectionHead`) and ``loss``
    (:class:`~sslsv_sb.losses.vicreg.VICRegLoss`); the ``inv`` / ``var`` / ``cov``
    terms are logged per epoch.

    Example
    -------
    See ``hparams/vicreg_ecapa.yaml``.
    """

    method_name = "vicreg"
