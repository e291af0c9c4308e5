"""Supervised AAM-softmax baseline and linear probe (sslsv ``Supervised``).

One labelled crop per utterance, a cosine classifier over the speakers and the
additive angular margin softmax (ArcFace, arXiv 1801.07698; AAM-softmax for speakers,
arXiv 1906.07317) with ``s = 30``, ``m = 0.2``
(:class:`~sslsv_sb.losses.aam.AAMSoftmaxLoss`). sslsv reports 2.95 % (Fast ResNet-34)
and 1.34 % (ECAPA-TDNN C=1024) EER on VoxCeleb1-O after VoxCeleb2 training: the upper
bound the self-supervised methods are compared with.

With ``freeze_encoder: True`` only the classifier is trained on top of a fixed
(e.g. self-supervised, ``encoder_checkpoint``) encoder: a linear probe. Fine-tuning an
SSL encoder uses a reduced encoder learning rate, ``encoder_lr_factor`` (sslsv's
label-efficient evaluation divides the LR by 10).
"""

import logging

import torch

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.distributed import unwrap
from sslsv_sb.errors import SSLSVError

logger = logging.getLogger(__name__)


class SupervisedBrain(SSLBrain):
    """Speaker classification with AAM-softmax on one crop per utterance.

    hparams: ``view_groups: {views: [1, frame_length]}``, ``label_key`` (e.g.
    ``Speaker``; ``batch.label`` holds integer class ids), ``n_classes``,
    ``freeze_encoder`` (default False), ``encoder_checkpoint`` (optional path to an
    ``embedding_model.ckpt`` state dict loaded into the encoder at fit start, before
    checkpoint recovery), ``encoder_lr_factor`` (default 1.0: the encoder parameters
    get ``lr * encoder_lr_factor``, the classifier ``lr``; the ratio is kept through
    the yaml's ``lr_annealing`` / ``lr_schedule``).

    ``modules``: the encoder modules, ``loss``
    (:class:`~sslsv_sb.losses.aam.AAMSoftmaxLoss`, which owns the classifier weights;
    list it in the checkpointer's recoverables).

    Frozen encoder: ``requires_grad_(False)`` at fit start (so it is excluded from the
    optimiser and from DDP), BatchNorm / dropout kept in eval mode on every batch
    (``Brain`` puts all modules in train mode at each epoch start) and the encoder run
    under ``no_grad``: its weights and running statistics never change.

    Example
    -------
    See ``hparams/supervised_ecapa.yaml`` and
    ``tests/brains/test_contrastive_brains.py``.
    """

    method_name = "supervised"

    def frozen(self):
        """True when the encoder is frozen (linear probe)."""
        return bool(getattr(self.hparams, "freeze_encoder", False))

    def encoder_modules(self):
        """Modules that make up the (possibly frozen) encoder."""
        return [
            self.modules[k]
            for k in ("compute_features", "mean_var_norm", "embedding_model")
        ]

    def load_encoder_checkpoint(self):
        """Load ``encoder_checkpoint`` (a state dict file) into ``embedding_model``."""
        path = getattr(self.hparams, "encoder_checkpoint", None)
        if not path:
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise SSLSVError(f"encoder_checkpoint {path}: cannot load ({err})") from err
        try:
            unwrap(self.modules.embedding_model).load_state_dict(state)
        except RuntimeError as err:
            msg = " ".join(str(err).split())[:400]
            raise SSLSVError(
                f"encoder_checkpoint {path}: does not fit the yaml's encoder (same "
                f"encoder yaml, channels, emb_dim, n_mels needed): {msg}"
            ) from err
        logger.info("encoder weights loaded from %s", path)

    def on_fit_start(self):
        """Load / freeze the encoder, then wrap, build the optimiser and recover."""
        self.load_encoder_checkpoint()
        if self.frozen() and not getattr(self.hparams, "encoder_checkpoint", None):
            logger.warning(
                "freeze_encoder without encoder_checkpoint: probing the initial "
                "(random or recovered) encoder"
            )
        if self.frozen():
            for module in self.encoder_modules():
                module.requires_grad_(False)
        super().on_fit_start()

    def encoder_lr_factor(self):
        """``encoder_lr_factor`` hparam as a float (1.0 when absent)."""
        factor = getattr(self.hparams, "encoder_lr_factor", None)
        factor = 1.0 if factor is None else float(factor)
        if factor <= 0:
            raise SSLSVError(f"encoder_lr_factor must be > 0, got {factor}")
        return factor

    def param_groups(self):
        """Base groups, with the encoder split into ``lr_factor`` groups if needed."""
        groups = super().param_groups()
        factor = self.encoder_lr_factor()
        if factor == 1.0 or self.frozen():
            return groups
        encoder = {id(p) for m in self.encoder_modules() for p in m.parameters()}
        out = []
        for g in groups:
            enc = [p for p in g["params"] if id(p) in encoder]
            rest = [p for p in g["params"] if id(p) not in encoder]
            if rest:
                out.append({**g, "params": rest, "lr_factor": 1.0})
            if enc:
                out.append({**g, "params": enc, "lr_factor": factor})
        return out

    def apply_lr_factors(self):
        """Set each ``lr_factor`` group's LR to ``factor`` x the classifier's LR."""
        groups = getattr(getattr(self, "optimizer", None), "param_groups", [])
        ref = next((g["lr"] for g in groups if g.get("lr_factor") == 1.0), None)
        if ref is None:
            return
        for group in groups:
            if "lr_factor" in group:
                group["lr"] = ref * group["lr_factor"]

    def init_optimizers(self):
        """Optimiser over :meth:`param_groups`, encoder groups at the reduced LR."""
        super().init_optimizers()
        self.apply_lr_factors()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Base epoch end; the LR factors are re-applied before the checkpoint save.

        The base ``lr_annealing`` step sets every group to the same LR; the factors
        are put back before the checkpoint is written (so a resumed run, and the
        saved optimiser state, carry the reduced encoder LR) and again afterwards.
        """
        ckpt = self.checkpointer
        if ckpt is None or not hasattr(self, "optimizer"):
            super().on_stage_end(stage, stage_loss, epoch)
            return
        save = ckpt.save_and_keep_only

        def save_with_factors(*args, **kwargs):
            self.apply_lr_factors()
            return save(*args, **kwargs)

        ckpt.save_and_keep_only = save_with_factors
        try:
            super().on_stage_end(stage, stage_loss, epoch)
        finally:
            del ckpt.save_and_keep_only  # back to the class method
        self.apply_lr_factors()

    def on_fit_batch_start(self, batch, should_step):
        """Keep a frozen encoder in eval mode; keep the encoder LR ratio."""
        super().on_fit_batch_start(batch, should_step)
        self.apply_lr_factors()
        if self.frozen():
            for module in self.encoder_modules():
                module.eval()

    def compute_forward(self, batch, stage):
        """Embed the single crop.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.views`` ``(B, 1, L)``.
        stage : sb.Stage
            Augmentation is applied in TRAIN.

        Returns
        -------
        torch.Tensor
            ``(B, D)`` embeddings.
        """
        views = self.get_views(batch, n_views=1)  # (B, 1, L)
        x = self.augment(views[:, 0], stage)  # (B, L)
        if self.frozen():
            with torch.no_grad():
                return self.embed(x).detach()
        return self.embed(x)

    def compute_objectives(self, predictions, batch, stage):
        """AAM-softmax of the embeddings against ``batch.label``.

        Arguments
        ---------
        predictions : torch.Tensor
            ``(B, D)`` embeddings.
        batch : PaddedBatch
            ``batch.label`` ``(B,)`` integer class ids.
        stage : sb.Stage
            Unused (the loss's accuracy is recorded by the base Brain).

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        if not hasattr(batch, "label"):
            raise SSLSVError(
                "the supervised baseline needs labels: set label_key (e.g. Speaker)"
            )
        labels = batch.label.to(self.device).long()
        return self.modules.loss(predictions, labels)
