"""BYOL for speaker embeddings (Grill et al., "Bootstrap Your Own Latent",
arXiv 2006.07733).

Online network = encoder -> projector -> predictor; target network = EMA copy of the
encoder and projector (cosine momentum 0.996 -> 1, sec. 3.2). Each online prediction
regresses the target projection of the other view (stop-gradient), symmetrised
(:class:`~sslsv_sb.losses.byol.BYOLLoss`). Evaluation uses the **online** encoder.

sslsv's speaker headline ``byol_proj-2048-BN-R-2048-BN-R-512_pred-4096-BN-R-256_
m-0.996-sched``: projector 2048-2048-512, predictor 512-4096-512 (the name says 256;
sslsv's code gives 512) (``hparams/byol_ecapa.yaml``).
"""

import torch

from sslsv_sb.brains.momentum import MomentumBrain
from sslsv_sb.brains.siamese import embed_views, record_embedding_rank


class BYOLBrain(MomentumBrain):
    """BYOL (arXiv 2006.07733).

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector``, ``predictor``, ``teacher_model`` and ``teacher_projector`` (same
    constructors as the online ones; copied from them at fit start and updated by EMA,
    :class:`~sslsv_sb.brains.momentum.MomentumBrain`; listed in ``momentum_pairs`` and
    in the checkpointer's recoverables), ``augment`` (optional), ``loss``.

    hparams: ``momentum_pairs``, ``start_tau`` (0.996), ``end_tau`` (1.0),
    ``tau_scheduler`` (True: cosine over the optimiser steps of the run).

    Both networks see the same augmented crops; each view is a separate encoder pass.
    Under DDP the target's BatchNorm is synchronised too
    (:meth:`~sslsv_sb.brains.momentum.MomentumBrain.sync_teacher_batchnorm`).

    Example
    -------
    See ``hparams/byol_ecapa.yaml``.
    """

    method_name = "byol"

    def compute_forward(self, batch, stage):
        """Online predictions and target projections of both views.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.views`` ``(B, 2, L)``.
        stage : sb.Stage
            Augmentation in TRAIN.

        Returns
        -------
        tuple of torch.Tensor
            ``(p1, p2, z1, z2)``, each ``(B, D')``; ``z`` without gradient.
        """
        views = self.get_views(batch, n_views=2)  # (B, 2, L)
        x, ys = embed_views(self, views, stage)  # 2 x (B, D)
        record_embedding_rank(self, ys[0], stage)  # dimensional-collapse monitor
        p1, p2 = (self.modules.predictor(self.modules.projector(y)) for y in ys)
        with torch.no_grad():
            _, ts = embed_views(
                self, views, stage, modules=self.teacher_modules(), augmented=x
            )
            z1, z2 = (self.modules.teacher_projector(t).detach() for t in ts)
        return p1, p2, z1, z2

    def compute_objectives(self, predictions, batch, stage):
        """Symmetric BYOL regression loss of ``(p1, p2, z1, z2)``."""
        return self.modules.loss(*predictions)
