"""Training infrastructure shared by every Brain: RNG checkpointing, step logging.

- :class:`RNGState` is a checkpoint recoverable holding the torch / numpy / python RNG
  states, so a resumed CPU run draws the same augmentations as an uninterrupted one
  (crop positions are already a pure function of seed, epoch and sample index).
- :class:`StepLogger` writes per-step and per-epoch scalars to TensorBoard and
  (optionally, offline by default) Weights & Biases, on the main process only.
"""

import logging
import os
import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from sslsv_sb.distributed import rank

logger = logging.getLogger(__name__)


@torch.no_grad()
def effective_rank(x):
    """Effective rank of a batch of embeddings (Roy & Vetterli, EUSIPCO 2007).

    ``exp(H(p))`` with ``p_i = s_i^2 / sum_j s_j^2`` the normalised eigenvalues of the
    centred ``(N, D)`` batch (``s`` its singular values): ``D`` (at most ``N - 1``) for
    isotropic embeddings, 1 when one direction carries all the variance. A falling
    value during training is *dimensional collapse* of the encoder output, which a
    projector with BatchNorm can hide from the loss and from ``z_std``
    (arXiv 2110.09348).

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` embeddings, N >= 2.

    Returns
    -------
    float

    Example
    -------
    >>> round(effective_rank(torch.eye(4) - 0.25), 3)
    3.0
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(
            f"effective_rank needs (N >= 2, D) embeddings, got {tuple(x.shape)}"
        )
    x = x.detach().float()
    x = x - x.mean(dim=0, keepdim=True)
    s2 = torch.linalg.svdvals(x).pow(2)
    total = s2.sum()
    if total <= 0:
        return 1.0
    p = s2 / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@register_checkpoint_hooks
class RNGState:
    """Checkpointable RNG states (torch CPU/CUDA, numpy global, python ``random``).

    Saved with tensors and plain types only (``torch.load(weights_only=True)``).
    Only the main process writes checkpoints; on resume, ranks > 0 derive a distinct
    stream from the restored state and their rank, so ranks keep drawing different
    augmentations while rank 0 (and any single-process run) continues exactly.
    """

    @mark_as_saver
    def save(self, path):
        """Write the current RNG states to ``path``."""
        np_state = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": random.getstate()[1],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    def __init__(self):
        self.pending = None

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Restore the RNG states saved in ``path``.

        An end-of-epoch state is applied at once. An intra-epoch state is applied by
        :meth:`apply_pending` at the first training batch: the data loader draws its
        base seed from the global RNG when its iterator is created, which happens
        *after* recovery on a mid-epoch resume (and before the saved state in the
        uninterrupted run), so applying it earlier would shift every later draw.
        """
        state = torch.load(path, weights_only=True)
        if end_of_epoch:
            self._apply(state)
        else:
            self.pending = state

    def apply_pending(self):
        """Apply a deferred intra-epoch state (no-op when none is pending)."""
        if self.pending is not None:
            state, self.pending = self.pending, None
            self._apply(state)

    @staticmethod
    def _apply(state):
        torch.set_rng_state(state["torch"])
        pos, has_gauss, cached = state["numpy_rest"]
        np.random.set_state(
            (
                "MT19937",
                state["numpy_keys"].numpy().astype(np.uint32),
                pos,
                has_gauss,
                cached,
            )
        )
        random.setstate((3, tuple(state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(state["cuda"])
            except RuntimeError:  # different number of GPUs
                logger.warning("CUDA RNG state not restored (device count changed)")
        if rank() > 0:
            offset = int(torch.randint(2**31, (1,))) + rank()
            torch.manual_seed(offset)
            np.random.seed(offset % 2**32)
            random.seed(offset)


class StepLogger:
    """Scalars to TensorBoard / W&B (main process only).

    Arguments
    ---------
    log_dir : str
        Folder for TensorBoard event files.
    tensorboard : bool
        Write TensorBoard events (needs the ``tensorboard`` package).
    wandb : bool
        Log to Weights & Biases (needs ``wandb``).
    wandb_mode : str
        ``offline`` by default (no network); ``online`` to sync.
    wandb_project : str
        W&B project name.
    run_name : str or None
        Run name (default: the output folder name).
    config : dict or None
        Hyper-parameters recorded with the run.
    """

    def __init__(
        self,
        log_dir,
        tensorboard=True,
        wandb=False,
        wandb_mode="offline",
        wandb_project="sslsv-sb",
        run_name=None,
        config=None,
    ):
        self.writer = None
        self.wandb = None
        if rank() != 0:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning(
                    "tensorboard is not installed: pip install 'sslsv-sb[logging]'"
                )
            else:
                self.writer = SummaryWriter(
                    log_dir=os.path.join(log_dir, "tensorboard")
                )
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                logger.warning(
                    "wandb is not installed: pip install 'sslsv-sb[logging]'"
                )
            else:
                self.wandb = wandb_lib.init(
                    project=wandb_project,
                    name=run_name or os.path.basename(os.path.normpath(log_dir)),
                    dir=log_dir,
                    mode=wandb_mode,
                    config=config or {},
                )

    def log(self, scalars, step, prefix="train"):
        """Log ``{name: float}`` at global ``step`` under ``prefix/``."""
        scalars = {f"{prefix}/{k}": float(v) for k, v in scalars.items()}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self):
        """Flush and close the writers."""
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def make_optimizer(
    params, name="adam", lr=1e-3, weight_decay=0.0, momentum=0.9, betas=(0.9, 0.999)
):
    """Optimiser chosen by name, so a yaml key (``--optimizer=sgd``) can switch it.

    HyperPyYAML merges a command-line override into a tagged node's arguments rather
    than replacing the tag, so ``--opt_class=!name:torch.optim.SGD`` would keep Adam;
    sslsv's ``optimizer: adam|sgd|adamw`` choice is offered this way instead.

    Arguments
    ---------
    params : iterable
        Parameters or parameter groups.
    name : str
        ``adam``, ``adamw`` or ``sgd`` (SGD with momentum, as in sslsv and DINO).
    lr, weight_decay, momentum, betas
        Usual hyper-parameters (momentum for SGD, betas for Adam/AdamW).
    """
    from sslsv_sb.errors import SSLSVError

    name = str(name).lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=weight_decay, momentum=momentum
        )
    raise SSLSVError(f"optimizer: unknown name {name!r} (adam, adamw or sgd)")
