"""SimCLR for speaker embeddings (Chen et al., arXiv 2002.05709).

Two random crops of the same utterance are positives; every other crop of the
(global) batch is a negative. sslsv's speaker headline uses no projector and
tau = 0.03 (``hparams/simclr_ecapa.yaml``).

With an ``ssps`` module (``hparams/ssps_simclr_ecapa.yaml``), the second view's
embedding ``z2`` is replaced by a pseudo-positive (SSPS, arXiv 2501.17772); see
:class:`~sslsv_sb.brains.ssps.SSPSMixin`.
"""

from sslsv_sb.brains.siamese import SiameseBrain


class SimCLRBrain(SiameseBrain):
    """SimCLR (arXiv 2002.05709): ``modules`` adds ``projector`` (optional),
    ``loss`` (:class:`~sslsv_sb.losses.ntxent.NTXentLoss`, called as
    ``loss(z1, z2)`` with ``(B, D')`` projections) and ``ssps`` (optional,
    :class:`~sslsv_sb.brains.ssps.SSPSMixin`).

    Both views go through the encoder and the projector in one pass of ``2B`` rows
    (``joint_views``, as sslsv).

    Example
    -------
    See ``hparams/simclr_ecapa.yaml`` and ``tests/brains/test_base_brain.py``.
    """

    method_name = "simclr"
    joint_views = True


__all__ = ["SimCLRBrain"]
