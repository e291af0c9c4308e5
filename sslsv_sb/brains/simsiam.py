"""SimSiam for speaker embeddings (Chen & He, arXiv 2011.10566).

Encoder -> projector (BN on every layer, the last one without affine) -> predictor
(bottleneck); ``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with the negative cosine
``D`` (:class:`~sslsv_sb.losses.simsiam.SimSiamLoss`). The predictor is trained with a
**fixed learning rate** (paper sec. 4.4, "predictor with a fixed lr ... works well"):
its parameters form their own optimiser group flagged ``fixed_lr`` whose LR no
scheduler may change (see :class:`SimSiamBrain`).

The projector's linear layers in front of a BatchNorm have no bias
(:class:`~sslsv_sb.models.heads.SimSiamProjectionHead`): this replaces sslsv's "hack"
that freezes the last bias (inventory §9).

sslsv's speaker headline ``simsiam_proj-2048-BN-R-2048-BN-R-512-BN_pred-512-BN-R-2048``:
projector 2048-2048-512 (+BN), predictor 512-512-512 (``hparams/simsiam_ecapa.yaml``).
"""

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.siamese import embed_views, record_embedding_rank


def restore_fixed_lr(optimizer):
    """Reset the LR of every parameter group that has a ``fixed_lr`` value.

    Arguments
    ---------
    optimizer : torch.optim.Optimizer
        Groups with ``group["fixed_lr"]`` (a float) get ``lr = fixed_lr``.
    """
    for group in optimizer.param_groups:
        if group.get("fixed_lr") is not None:
            group["lr"] = group["fixed_lr"]


class SimSiamBrain(SSLBrain):
    """SimSiam (arXiv 2011.10566).

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector``, ``predictor``, ``augment`` (optional), ``loss``.

    hparams: ``predictor_fixed_lr`` (default True): the predictor's parameters form
    the last optimiser group, with ``fixed_lr`` = the optimiser's initial LR
    (``predictor_lr`` if given). SpeechBrain's epoch schedule (``lr_annealing`` in
    :meth:`SSLBrain.on_stage_end`) sets every group's LR; the fixed value is put back
    right after it (and before every optimiser step, so any other schedule that
    changes all groups cannot move it either).

    Example
    -------
    See ``hparams/simsiam_ecapa.yaml``.
    """

    method_name = "simsiam"

    def param_groups(self):
        """Base groups without the predictor, plus one fixed-LR predictor group."""
        if not getattr(self.hparams, "predictor_fixed_lr", True):
            return super().param_groups()
        predictor = {id(p) for p in self.modules.predictor.parameters()}
        groups = []
        for g in super().param_groups():
            params = [p for p in g["params"] if id(p) not in predictor]
            if params:
                groups.append({**g, "params": params})
        pred = [p for p in self.modules.predictor.parameters() if p.requires_grad]
        extra = {"params": pred, "fixed_lr": None}
        if getattr(self.hparams, "predictor_lr", None) is not None:
            extra["lr"] = float(self.hparams.predictor_lr)
        return [*groups, extra]

    def init_optimizers(self):
        """Optimiser over :meth:`param_groups`; the predictor group's LR is frozen."""
        super().init_optimizers()
        if self.opt_class is None:
            return
        for group in self.optimizer.param_groups:
            if "fixed_lr" in group and group["fixed_lr"] is None:
                group["fixed_lr"] = float(group["lr"])

    def on_fit_batch_start(self, batch, should_step):
        """Put the fixed LR back before every step (whatever changed the others)."""
        super().on_fit_batch_start(batch, should_step)
        if hasattr(self, "optimizer"):
            restore_fixed_lr(self.optimizer)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Base epoch end (LR schedule of all groups), then restore the fixed LR."""
        super().on_stage_end(stage, stage_loss, epoch)
        if hasattr(self, "optimizer"):
            restore_fixed_lr(self.optimizer)

    def compute_forward(self, batch, stage):
        """Predictions and projections of both views.

        Returns
        -------
        tuple of torch.Tensor
            ``(p1, p2, z1, z2)``, each ``(B, D')`` (the loss detaches ``z``).
        """
        views = self.get_views(batch, n_views=2)  # (B, 2, L)
        _, (y1, y2) = embed_views(self, views, stage)
        record_embedding_rank(self, y1, stage)  # dimensional-collapse monitor
        z1, z2 = self.modules.projector(y1), self.modules.projector(y2)  # (B, D')
        p1, p2 = self.modules.predictor(z1), self.modules.predictor(z2)
        return p1, p2, z1, z2

    def compute_objectives(self, predictions, batch, stage):
        """Symmetric negative-cosine loss; its ``z_std`` (collapse monitor) is
        logged."""
        return self.modules.loss(*predictions)
