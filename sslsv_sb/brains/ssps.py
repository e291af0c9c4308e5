"""SSPS wiring for the Brains (Lepage & Dehak, arXiv 2501.17772, 2505.14561).

:class:`SSPSMixin` adds Self-Supervised Positive Sampling to any two-branch Brain
(SimCLR, SimCLR margins, MoCo, DINO, SwAV, VICReg, Barlow Twins). It is inert unless
the yaml puts an :class:`~sslsv_sb.ssps.SSPS` module under ``modules: ssps`` (and in
the checkpointer's recoverables), so the Brains keep their behaviour without it.

Per step (TRAIN only), following the protocol of :mod:`sslsv_sb.ssps.core`::

    ref = normalize(reference_encoder.eval()(batch.ref_view))   # (B, D_ref), no grad
    positives_pp = brain.ssps_replace(batch, positives)         # before the loss
    loss = ...
    brain.ssps_update(positives)                                # after the loss

* the reference crop is the extra **clean** view group ``ref_view: [1, L_ref]`` (not
  passed through ``self.augment``); the reference encoder is the student encoder, or
  the momentum (teacher) encoder of ``embedding_model`` when ``momentum_pairs`` has
  one (MoCo, DINO), always in eval mode under ``no_grad`` (sslsv runs DINO's momentum
  encoder in train mode here, inventory §9 item 10);
* ``batch.index`` gives the dataset index of each anchor;
* per epoch, :meth:`on_stage_start` calls ``ssps.prepare_epoch(epoch - 1)``
  (SSPS epochs are 0-based like sslsv's ``start_epoch``: with ``start_epoch: 100``
  the queues fill during SpeechBrain epoch 100 and positives are replaced from
  epoch 101 on);
* monitoring labels (``ssps_speaker_acc``, ``ssps_kmeans_nmi_speaker``) come from the
  column ``ssps_label_key`` (default: ``label_key``) of the run's own train list when
  it has one; they never influence training.

Staged schedule: ``init_from: <base run output folder>`` loads the base run's last
checkpoint (every recoverable it has: encoder, heads, teachers, optimiser, loss
queues, epoch counter; SSPS state excepted) when this run has no checkpoint of its
own yet; afterwards (resume mid-SSPS) the run's own checkpoints win.
"""

import logging
import os

import speechbrain as sb
import torch
import torch.nn.functional as F

from sslsv_sb.distributed import unwrap
from sslsv_sb.errors import SSLSVError

logger = logging.getLogger(__name__)


def as_index_tensor(value, device):
    """``(B,)`` long tensor from a batch field (tensor, PaddedData or list)."""
    value = getattr(value, "data", value)
    return torch.as_tensor(value, dtype=torch.long).reshape(-1).to(device)


def resize_reference_queue(ssps, dataset_size):
    """Size the SSPS reference queue (and k-means assignments) to the train set.

    Called at fit start, before checkpoint recovery, so the yaml does not have to
    know the number of training utterances (``dataset_size`` there is only an
    initial value). A recovered checkpoint then has matching shapes, unless the train
    list changed (recovery fails with a clear error).

    Arguments
    ---------
    ssps : sslsv_sb.ssps.SSPS
        The module (unwrapped).
    dataset_size : int
        Number of training utterances ``R``.
    """
    ref = ssps.ref_queue
    if ref.size == dataset_size:
        return
    dev = ref.embeddings.device
    ref.embeddings = torch.zeros(dataset_size, ref.embeddings.shape[1], device=dev)
    ref.indices = torch.full((dataset_size,), -1, dtype=torch.long, device=dev)
    sampler = ssps.sampler
    if sampler.assignments.numel():  # k-means modes
        sampler.assignments = torch.full(
            (dataset_size,), -1, dtype=torch.long, device=dev
        )
    logger.info("SSPS reference queue sized to %d utterances", dataset_size)


def init_from_run(brain, folder):
    """Load the last checkpoint of another run into ``brain`` (partial load).

    Arguments
    ---------
    brain : SSLBrain
        A Brain whose optimiser is built (after ``SSLBrain.on_fit_start``).
    folder : str
        The other run's ``output_folder`` (or its ``save`` folder).

    Returns
    -------
    list of str
        Names of the recoverables loaded.
    """
    from speechbrain.utils.checkpoints import Checkpointer

    save = os.path.join(folder, "save")
    save = save if os.path.isdir(save) else folder
    other = Checkpointer(save, allow_partial_load=True)
    ckpt = other.find_checkpoint()
    if ckpt is None:
        raise SSLSVError(f"init_from: no checkpoint under {save}")
    loaded = []
    for name, obj in brain.checkpointer.recoverables.items():
        if name in ckpt.paramfiles:
            other.add_recoverable(name, obj)
            loaded.append(name)
    try:
        other.load_checkpoint(ckpt)
    except (RuntimeError, KeyError, ValueError) as err:
        msg = " ".join(str(err).split())[:400]
        raise SSLSVError(
            f"init_from {ckpt.path}: incompatible with this yaml ({msg})"
        ) from err
    logger.info("initialised from %s: %s", ckpt.path, ", ".join(loaded))
    return loaded


class SSPSMixin:
    """Self-Supervised Positive Sampling for a Brain (arXiv 2501.17772, 2505.14561).

    hparams: ``modules.ssps`` (:class:`~sslsv_sb.ssps.SSPS`; without it every hook is
    a no-op), ``view_groups.ref_view`` (``[1, L_ref]`` clean reference crop),
    ``ssps_label_key`` (monitoring labels, default ``label_key``), ``init_from``
    (base run folder for the staged schedule).

    Subclasses call :meth:`ssps_replace` on their positive-branch embeddings before
    the loss and :meth:`ssps_update` with their *own* positives after it.
    """

    # ------------------------------------------------------------------ helpers
    @property
    def ssps(self):
        """The SSPS module (unwrapped) or None."""
        if "ssps" not in self.modules:
            return None
        return unwrap(self.modules.ssps)

    def ssps_reference_modules(self):
        """``(features, norm, encoder)``: the teacher of ``embedding_model`` if any."""
        key = "embedding_model"
        for student, teacher in getattr(self.hparams, "momentum_pairs", None) or []:
            if student == "embedding_model":
                key = teacher
        return (
            unwrap(self.modules.compute_features),
            unwrap(self.modules.mean_var_norm),
            unwrap(self.modules[key]),
        )

    @torch.no_grad()
    def ssps_reference(self, batch):
        """``(B, D_ref)`` L2-normalised embeddings of the clean reference crop.

        The reference encoder runs in eval mode (BatchNorm running statistics,
        no dropout) under ``no_grad``, without the DDP wrapper; its train/eval
        flags are restored afterwards.
        """
        if getattr(batch, "ref_view", None) is None:
            raise SSLSVError(
                "SSPS needs a clean reference crop: add "
                "`ref_view: [1, <ssps_frame_length>]` to view_groups"
            )
        wavs = self.get_views(batch, "ref_view")[:, 0]  # (B, L_ref), not augmented
        mods = self.ssps_reference_modules()
        flags = [m.training for m in mods]
        for m in mods:
            m.eval()
        try:
            ref = self.embed(wavs, modules=mods)
        finally:
            for m, flag in zip(mods, flags):
                m.train(flag)
        if ref.dim() != 2:
            raise SSLSVError(
                f"SSPS reference embeddings must be (B, D), got {tuple(ref.shape)}"
            )
        return F.normalize(ref.float(), dim=-1)

    def training_only_recoverables(self):
        """Checkpointer names of the SSPS module: state that only training reads.

        Its reference queue is sized by the train list at fit start, so a Brain
        built for evaluation (``evaluate.py``, ``pseudo_labels.py``, export) could
        not load it, and does not need it (:func:`sslsv_sb.export.load_model` skips
        these names).
        """
        ssps, ckpt = self.ssps, self.checkpointer
        if ssps is None or ckpt is None:
            return []
        return [n for n, obj in ckpt.recoverables.items() if unwrap(obj) is ssps]

    # ------------------------------------------------------------------ per step
    def ssps_replace(self, batch, positives, stage=sb.Stage.TRAIN):
        """Replace positives by pseudo-positives (identity when SSPS is off).

        Arguments
        ---------
        batch : PaddedBatch
            ``batch.index`` ``(B,)`` and ``batch.ref_view`` ``(B, 1, L_ref)``.
        positives : torch.Tensor
            ``(B, D)`` or ``(B, P, D)`` positive-branch embeddings.
        stage : sb.Stage
            Only TRAIN samples.

        Returns
        -------
        torch.Tensor
            Same shape; replaced rows are detached queue entries.
        """
        self._ssps_pending = None
        ssps = self.ssps
        if ssps is None or stage != sb.Stage.TRAIN or not ssps.filling:
            return positives
        indices = as_index_tensor(batch.index, self.device)  # (B,)
        ref = self.ssps_reference(batch)  # (B, D_ref)
        self._ssps_pending = (indices, ref)
        targets = ssps.sample(indices, ref)  # (B,)
        if ssps.metrics:
            self.record(**ssps.metrics)
        return ssps.apply(positives, targets)

    def ssps_update(self, positives):
        """Write the step's reference and *own* positive embeddings to the queues."""
        pending = getattr(self, "_ssps_pending", None)
        if pending is None:
            return
        indices, ref = pending
        self.ssps.update(indices, ref, positives.detach())
        self._ssps_pending = None

    # ------------------------------------------------------------------ stages
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **kwargs):
        """Remember the training-set size (the SSPS reference-queue size)."""
        if stage == sb.Stage.TRAIN:
            self._ssps_dataset_size = len(dataset)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **kwargs)

    def ssps_labels(self):
        """``(R,)`` class ids per dataset index from the train list, or None."""
        key = getattr(self.hparams, "ssps_label_key", None) or getattr(
            self.hparams, "label_key", None
        )
        train_list = getattr(self.hparams, "train_list", None)
        data_folder = getattr(self.hparams, "data_folder", None)
        if not key or not train_list or not data_folder:
            return None
        from sslsv_sb.data.lists import read_train_list, resolve

        path = resolve(train_list, data_folder)
        try:
            df = read_train_list(path, data_folder, label_key=key, check_files=False)
        except SSLSVError as err:
            logger.info("SSPS monitoring labels unavailable (%s)", err)
            return None
        if len(df) != self.ssps.ref_queue.size:
            return None
        classes = {c: i for i, c in enumerate(sorted(set(df["label"])))}
        return torch.tensor([classes[c] for c in df["label"]], dtype=torch.long)

    def on_fit_start(self):
        """Size the queues, recover (or ``init_from`` a base run), set labels."""
        ssps = self.ssps
        size = getattr(self, "_ssps_dataset_size", None)
        if ssps is not None and size:
            resize_reference_queue(ssps, size)
        super().on_fit_start()
        init = getattr(self.hparams, "init_from", None)
        if init and self.checkpointer is not None:
            if not self.checkpointer.find_checkpoints():
                init_from_run(self, init)
        if ssps is not None:
            ssps.set_labels(self.ssps_labels())

    def on_stage_start(self, stage, epoch=None):
        """Base hook, then ``ssps.prepare_epoch`` (k-means) at each TRAIN epoch."""
        super().on_stage_start(stage, epoch)
        ssps = self.ssps
        if ssps is not None and stage == sb.Stage.TRAIN and epoch is not None:
            metrics = ssps.prepare_epoch(int(epoch) - 1)
            self.record(**{k: float(v) for k, v in metrics.items()})
            self.record(ssps_active=float(ssps.active))


__all__ = ["SSPSMixin", "as_index_tensor", "init_from_run", "resize_reference_queue"]
