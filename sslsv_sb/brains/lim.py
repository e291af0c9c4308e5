"""Local Info Max for speaker embeddings (Ravanelli & Bengio, arXiv 1812.00271).

Two chunks (random crops) of the same utterance form a positive pair, chunks of two
different utterances of the batch a negative pair; a cosine critic is trained with a
BCE, NCE or MINE mutual-information bound (:class:`~sslsv_sb.losses.lim.LIMLoss`).
Negatives are never the positive (unlike sslsv, inventory §9 item 17).

sslsv's headline ``lim_loss-NCE_proj-2048-BN-R-2048-BN-R-512``: Fast ResNet-34 (SAP),
projector 2048-2048-512, NCE; 16.13 % EER / 0.9015 on VoxCeleb1-O
(``hparams/lim_resnet34.yaml``).
"""

from sslsv_sb.brains.siamese import SiameseBrain


class LIMBrain(SiameseBrain):
    """LIM (arXiv 1812.00271): two views -> encoder -> ``projector`` (optional) ->
    :class:`~sslsv_sb.losses.lim.LIMLoss`, which returns a dict (``loss``,
    ``pos_sim``, ``neg_sim``; the similarities are logged per epoch).

    No SSPS (as sslsv): an ``ssps`` module is refused.

    Example
    -------
    See ``hparams/lim_resnet34.yaml`` and ``tests/brains/test_frame_level_brains.py``.
    """

    method_name = "lim"

    def on_fit_start(self):
        """Refuse SSPS (not defined for LIM), then the base start."""
        if "ssps" in self.modules:
            raise ValueError("LIM does not support SSPS (remove modules: ssps)")
        super().on_fit_start()

    def compute_objectives(self, predictions, batch, stage):
        """LIM loss of the two views' embeddings ``(B, D')``."""
        z1, z2 = predictions
        return self.loss_and_record(self.modules.loss(z1, z2), stage)


__all__ = ["LIMBrain"]
