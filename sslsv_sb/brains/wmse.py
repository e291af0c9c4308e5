"""W-MSE for speaker embeddings (Ermolov et al., arXiv 2007.06346).

Two views -> encoder -> projector (1024-64) -> whitened MSE on the global batch
(:class:`~sslsv_sb.losses.wmse.WMSELoss`, sub-batches of ``whitening_size``; under
DDP the random split is broadcast from rank 0, so every rank must call the loss at
every step, which this Brain does). sslsv: whitening size 128, 1 iteration, eps 0
(``hparams/wmse_ecapa.yaml``).
"""

from sslsv_sb.brains.siamese import SiameseBrain


class WMSEBrain(SiameseBrain):
    """W-MSE (arXiv 2007.06346): ``projector`` (e.g.
    :class:`~sslsv_sb.models.heads.WMSEProjectionHead`) and ``loss``
    (:class:`~sslsv_sb.losses.wmse.WMSELoss`). The global batch must give
    whitening sub-batches with more rows than projector dimensions (eps = 0).

    Example
    -------
    See ``hparams/wmse_ecapa.yaml``.
    """

    method_name = "wmse"
