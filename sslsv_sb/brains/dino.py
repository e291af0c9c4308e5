"""DINO for speaker embeddings (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", arXiv 2104.14294).

Self-distillation without labels: a student (encoder + :class:`DINOHead`) sees 2
global crops and N local crops of each utterance; an EMA teacher (same architecture,
cosine momentum 0.996 -> 1) sees the 2 global crops only. The teacher's outputs are
centred (momentum 0.9, global-batch mean) and sharpened (temperature with an optional
warm-up), and the student (temperature 0.1) is trained to match them across views
(:class:`~sslsv_sb.losses.dino.DINOLoss`). **Evaluation uses the teacher encoder.**

Multi-crop: the yaml's ``view_groups: {views: [2, 64000], local_views: [4, 32000]}``
gives ``batch.views (B, 2, Lg)`` and ``batch.local_views (B, 4, Ll)``; both lengths
are honoured exactly and each length group goes through the encoder in its own pass
(no padding, no cropping), as in the DINO code (sslsv always cut locals to ``Lg // 2``
and padded shorter ones with -100, inventory §9 item 5).

Optimisation (DINO code / sslsv): biases and norm parameters without weight decay
(``no_weight_decay_bias_norm: True``); after backward, the gradient of **every
parameter** is clipped to norm ``clip_grad`` (3.0) separately; the gradients of the
head's last (weight-normalised) layer are dropped during the first
``freeze_last_layer`` epoch(s) (1). Optional per-step linear warm-up + cosine LR
(``warmup_cosine: True``). Per-parameter clipping and the warm-up + cosine LR are
options of every Brain (:class:`~sslsv_sb.brains.base.SSLBrain`).

sslsv's ECAPA headline ``dino_enc-ECAPATDNN-1024_proj-2048-BN-G-2048-BN-G-256-L2-65536
_G-2x4_L-4x2_t-0.04``: 80 mel, head 2048-2048-256 -> 65536, tau_s 0.1, tau_t 0.04,
80 epochs, batch 128, SGD lr 0.2 (x0.95 / 5 epochs), wd 5e-5, aug strategy ``all``;
2.82 % EER / 0.3463 minDCF on VoxCeleb1-O (``hparams/dino_ecapa.yaml``).
"""

import functools

import torch

from sslsv_sb.brains.momentum import MomentumBrain
from sslsv_sb.brains.ssps import SSPSMixin
from sslsv_sb.distributed import unwrap


def batch_size(batch):
    """Number of samples ``B`` of a batch (from ``batch.views``)."""
    return getattr(batch.views, "data", batch.views).shape[0]


class DINOBrain(SSPSMixin, MomentumBrain):
    """DINO (arXiv 2104.14294) with multi-crop, EMA teacher and teacher inference.

    ``modules`` (yaml):

    * ``compute_features``, ``mean_var_norm``, ``embedding_model`` (student encoder),
      ``head`` (:class:`~sslsv_sb.models.heads.DINOHead`);
    * ``teacher_model`` and ``teacher_head``: the same constructors (the encoder block
      included twice); listed in ``momentum_pairs``
      (``[[embedding_model, teacher_model], [head, teacher_head]]``) and in the
      checkpointer's recoverables. :class:`MomentumBrain` copies the student into
      them at fit start (before recovery), freezes them (no optimiser, no DDP) and
      EMA-updates them after every optimiser step;
    * ``augment`` (optional), ``loss`` (:class:`~sslsv_sb.losses.dino.DINOLoss`; its
      ``center`` buffer is a recoverable too).

    hparams: ``clip_grad`` (per-parameter max gradient norm, 0 / None: off; set
    the global ``max_grad_norm: .inf``), ``freeze_last_layer`` (epochs),
    ``warmup_cosine`` (False: the yaml's epoch-level ``lr_annealing``, sslsv's x0.95
    every 5 epochs; True: per-step ``schedules.cosine_warmup_lr`` from ``lr`` down
    to ``min_lr`` after ``warmup_epochs``), ``no_weight_decay_bias_norm`` (all but
    ``freeze_last_layer`` handled by :class:`~sslsv_sb.brains.base.SSLBrain`).

    SSPS (optional ``ssps`` module, arXiv 2501.17772, 2505.14561): the teacher
    outputs of the ``G`` global crops of an anchor are replaced by the stored
    teacher outputs of its pseudo-positive (``n_positives: G``); the reference crop
    goes through the teacher encoder in eval mode
    (:class:`~sslsv_sb.brains.ssps.SSPSMixin`). The ``ref_view`` group is never
    mixed with the local crops (sslsv crashes there, inventory §1.3).

    DDP: the centre update all-reduces inside the loss, which every rank calls once
    per step; the teacher is never wrapped (it has no trainable parameter) but its
    BatchNorm is synchronised
    (:meth:`~sslsv_sb.brains.momentum.MomentumBrain.sync_teacher_batchnorm`).

    Example
    -------
    See ``hparams/dino_ecapa.yaml`` and ``tests/brains/test_noncontrastive_brains.py``.
    """

    method_name = "dino"

    # ------------------------------------------------------------------ modules
    def inference_modules(self):
        """Evaluation embeddings come from the **teacher** encoder (DINO, sslsv)."""
        return tuple(unwrap(m) for m in self.teacher_modules())

    def validation_encoders(self):
        """Validation EER of the teacher (``valid_eer``, selects the model) and of
        the student (``valid_eer_student``), so a user sees which one learns."""
        student = (
            unwrap(self.modules.compute_features),
            unwrap(self.modules.mean_var_norm),
            unwrap(self.modules.embedding_model),
        )
        return {
            "valid_eer": self.encode,
            "valid_eer_student": functools.partial(self.encode, modules=student),
        }

    # ------------------------------------------------------------------ forward
    def crops(self, batch):
        """``(global (B, G, Lg), local (B, N, Ll) or None)`` on the device."""
        globals_ = self.get_views(batch, "views")
        local = None
        if getattr(batch, "local_views", None) is not None:
            local = self.get_views(batch, "local_views")
        return globals_, local

    def compute_forward(self, batch, stage):
        """Student logits of every crop and teacher logits of the global crops.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.views (B, G, Lg)`` global crops and, optionally,
            ``batch.local_views (B, N, Ll)`` local crops.
        stage : sb.Stage
            Augmentation in TRAIN.

        Returns
        -------
        student : torch.Tensor
            ``((G + N) * B, K)`` view-major logits (globals first).
        teacher : torch.Tensor
            ``(G * B, K)`` view-major logits, without gradient.
        """
        globals_, local = self.crops(batch)
        xg = self.augment(self.view_major(globals_), stage)  # (G*B, Lg)
        feats = [self.embed(xg)]  # one encoder pass per crop length
        if local is not None:
            xl = self.augment(self.view_major(local), stage)  # (N*B, Ll)
            feats.append(self.embed(xl))
        student = self.modules.head(torch.cat(feats))  # ((G+N)*B, K)
        with torch.no_grad():
            yt = self.embed(xg, modules=self.teacher_modules())  # same global crops
            teacher = self.modules.teacher_head(yt).detach()  # (G*B, K)
        return student, teacher

    def compute_objectives(self, predictions, batch, stage):
        """DINO loss at the 0-based epoch (teacher-temperature schedule)."""
        student, teacher = predictions
        if self.ssps is not None:
            # (G*B, K) view-major -> (B, G, K) per sample, replace, back
            g = teacher.shape[0] // batch_size(batch)
            own = teacher.reshape(g, -1, teacher.shape[1]).transpose(0, 1)
            new = self.ssps_replace(batch, own, stage)
            teacher = new.transpose(0, 1).reshape(-1, teacher.shape[1])
        loss = self.modules.loss(student, teacher, epoch=self.epoch0())
        if self.ssps is not None:
            self.ssps_update(own)
        return loss

    # ------------------------------------------------------------------ optimisation
    def on_before_optimizer_step(self):
        """Per-parameter clipping (base), then the last-layer freeze of the first
        epoch(s), on unscaled gradients."""
        super().on_before_optimizer_step()
        if self.epoch0() < int(getattr(self.hparams, "freeze_last_layer", 0)):
            unwrap(self.modules.head).cancel_last_layer_gradients()


__all__ = ["DINOBrain"]
