"""MoCo v2+ and MoCo with additive margins for speaker embeddings.

MoCo (He et al., arXiv 1911.05722) / MoCo v2 (Chen et al., arXiv 2003.04297), in the
symmetric "v2+" form of sslsv (as MoCo v3, arXiv 2104.02057): the online ("query")
encoder embeds both crops, an EMA ("key", momentum) encoder embeds them too and each
query is contrasted with the key of the *other* crop (positive) and with a FIFO queue
of past keys of that crop (negatives), one queue per view
(:class:`~sslsv_sb.losses.moco.MoCoLoss`, which enqueues the keys itself).

sslsv's speaker headline ``moco_proj-none_Q-32768_t-0.03_m-0.999``: no projector,
queue 32768, temperature 0.03, momentum 0.999 constant. ``MoCoMarginsBrain`` adds the
margins of arXiv 2404.14913 on the positive logit.
"""

import speechbrain as sb
import torch

from sslsv_sb.brains.margins import MarginScheduleMixin
from sslsv_sb.brains.momentum import MomentumBrain
from sslsv_sb.brains.ssps import SSPSMixin
from sslsv_sb.distributed import batch_shuffle, batch_unshuffle
from sslsv_sb.errors import SSLSVError


class MoCoBrain(SSPSMixin, MomentumBrain):
    """MoCo v2+ (arXiv 2003.04297): query encoder vs momentum key encoder + queues.

    ``modules`` (yaml):

    * ``compute_features``, ``mean_var_norm``, ``embedding_model`` (query encoder),
      optionally ``projector``;
    * ``teacher_model`` (key encoder, same constructor as ``embedding_model``) and,
      with a projector, ``teacher_projector``; both listed in ``momentum_pairs``
      (``[[embedding_model, teacher_model], [projector, teacher_projector]]``) and
      in the checkpointer's recoverables. :class:`MomentumBrain` copies the student
      into them at fit start, freezes them and updates them by EMA after every
      optimiser step (``start_tau: 0.999``, ``tau_scheduler: False`` = constant);
    * ``loss``: :class:`~sslsv_sb.losses.moco.MoCoLoss` (its queues are buffers:
      list it in the recoverables too, so a resumed run keeps its negatives).

    hparams: ``label_key`` + ``prevent_class_collisions`` (the loss masks queue
    entries of the query's class; labels come from ``batch.label``).

    **SSPS** (optional ``ssps`` module, arXiv 2501.17772): both keys ``k1``, ``k2``
    are replaced by the pseudo-positive's stored keys (``n_positives: 2``; the
    replaced keys are the ones enqueued, as sslsv); the reference crop goes
    through the key encoder in eval mode (:class:`~sslsv_sb.brains.ssps.SSPSMixin`).

    **Shuffle-BN.** The keys are computed on a batch shuffled across ranks with
    :func:`~sslsv_sb.distributed.batch_shuffle` and un-shuffled afterwards. With
    per-device BatchNorm (DDP with ``sync_batchnorm: False``, sslsv's
    ``ddp_sync_batchnorm: false``; the key encoder is never DDP-wrapped and its BN is
    never synchronised, ``sync_teacher_bn = False``, so it is always per-rank) a
    query and its key would otherwise be normalised with
    statistics of the same sub-batch, and the network can find the positive through
    this leak instead of learning speaker information (arXiv 1911.05722, §3.3).
    Shuffling gives the key encoder's BN a different random subset of the global
    batch. In a single process BN over the whole batch is permutation-invariant, so
    the shuffle alone would do nothing and the leak stays: the model could tell the
    current batch's keys from the queue's by their shared BatchNorm statistics.
    ``shuffle_bn_splits: S`` (hparam, default 1) therefore
    emulates S devices per process, like the single-GPU "SplitBatchNorm" of the
    MoCo authors' CIFAR demo: the query encoder runs on S consecutive chunks of the
    batch and the key encoder on S chunks of the shuffled batch, so a key's BN
    statistics come from a random subset other than its query's. The recipes set
    S = 4 (per process, also under DDP).
    Both views are encoded in one key-encoder pass of ``2B`` rows (as the query
    encoder does), shuffled together.

    **Inference** uses the query encoder ``embedding_model`` (as sslsv), which is
    also what the checkpoint's ``embedding_model.ckpt`` holds.

    Example
    -------
    See ``hparams/moco_ecapa.yaml`` and ``tests/brains/test_contrastive_brains.py``.
    """

    method_name = "moco"
    sync_teacher_bn = False  # shuffle-BN: per-rank key-encoder statistics

    def query_head(self, y):
        """Query projector (identity without a ``projector`` module)."""
        return self.modules.projector(y) if "projector" in self.modules else y

    def key_head(self, y):
        """Key projector (identity without a ``teacher_projector`` module)."""
        if "teacher_projector" in self.modules:
            return self.modules.teacher_projector(y)
        return y

    def bn_splits(self, n_rows):
        """Virtual devices for shuffle-BN in one process (``shuffle_bn_splits``).

        Raises ``SSLSVError`` (a configuration error: one ``error:`` line, exit 2)
        when a chunk of the ``n_rows`` rows would hold fewer than 2 rows (BatchNorm
        needs 2).
        """
        splits = int(getattr(self.hparams, "shuffle_bn_splits", 1) or 1)
        if splits < 1 or n_rows // splits < 2:
            raise SSLSVError(
                f"shuffle_bn_splits={splits}: needs >= 1 and at least 2 rows per "
                f"split ({n_rows} rows = 2 views x the per-rank batch)"
            )
        return splits

    def compute_forward(self, batch, stage):
        """Queries and keys of both crops.

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.views`` ``(B, 2, L)``.
        stage : sb.Stage
            Augmentation is applied in TRAIN.

        Returns
        -------
        tuple of torch.Tensor
            ``(q1, q2, k1, k2)``, each ``(B, D')``; queries un-normalised (MagFace /
            AdaFace margins use their norms), keys without gradient.
        """
        views = self.get_views(batch, n_views=2)  # (B, 2, L)
        x = self.augment(self.view_major(views), stage)  # (2B, L)
        splits = self.bn_splits(x.shape[0]) if stage == sb.Stage.TRAIN else 1
        # one encoder pass per virtual device: BN statistics per chunk
        q = torch.cat([self.embed(c) for c in x.chunk(splits)])  # (2B, D)
        q = self.query_head(q)  # (2B, D')
        with torch.no_grad():
            xs, idx_unshuffle = batch_shuffle(x)  # shuffle-BN
            keys = self.teacher_modules()
            k = torch.cat([self.embed(c, modules=keys) for c in xs.chunk(splits)])
            k = batch_unshuffle(self.key_head(k), idx_unshuffle).detach()  # (2B, D')
        q1, q2 = q.chunk(2)
        k1, k2 = k.chunk(2)
        return q1, q2, k1, k2

    def batch_labels(self, batch):
        """``(B,)`` class labels for class-collision masking, or None."""
        if not getattr(self.hparams, "prevent_class_collisions", False):
            return None
        if not getattr(self.hparams, "label_key", None):
            raise ValueError(
                "prevent_class_collisions needs label_key (a label column of the "
                "train list)"
            )
        return batch.label.to(self.device).long()

    def compute_objectives(self, predictions, batch, stage):
        """Symmetric MoCo loss (the loss then enqueues ``k1``, ``k2``).

        Arguments
        ---------
        predictions : tuple of torch.Tensor
            ``(q1, q2, k1, k2)`` from :meth:`compute_forward`.
        batch : PaddedBatch
            ``batch.label`` ``(B,)`` is used with ``prevent_class_collisions``.
        stage : sb.Stage
            SSPS samples in TRAIN only.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        q1, q2, k1, k2 = predictions
        own = torch.stack([k1, k2], dim=1)  # (B, 2, D')
        keys = self.ssps_replace(batch, own, stage)  # SSPS (identity when off)
        k1, k2 = keys[:, 0], keys[:, 1]
        loss = self.modules.loss(q1, q2, k1, k2, labels=self.batch_labels(batch))
        self.ssps_update(own)
        return loss


class MoCoMarginsBrain(MarginScheduleMixin, MoCoBrain):
    """MoCo v2+ with a margin on the positive logit (arXiv 2404.14913).

    Same as :class:`MoCoBrain`; ``loss`` is a
    :class:`~sslsv_sb.losses.moco.MoCoLoss` built with ``margin=`` (a
    ``PositiveMargin`` spec) and ``temperature: 0.03`` (sslsv's scale 33.33). The
    queries reach the loss un-normalised, so MagFace / AdaFace see the real norms
    (sslsv normalises them first, which makes both margins degenerate).
    ``margin_scheduler: True`` ramps the margin per epoch
    (:class:`~sslsv_sb.brains.margins.MarginScheduleMixin`).
    """

    method_name = "moco_margins"
