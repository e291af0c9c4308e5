"""Training infrastructure shared by every Brain: RNG checkpointing, step logging.

- :class:`RNGState` is a checkpoint recoverable holding the torch / numpy / python RNG
  states of every DDP rank, so a resumed run (one process or many) draws the same
  augmentations as an uninterrupted one (crop positions and the DDP shards are
  already a pure function of seed, epoch and sample index).
- :class:`StepLogger` writes per-step and per-epoch scalars to TensorBoard and
  (optionally, offline by default) Weights & Biases, on the main process only.
"""

import logging
import os
import random
from collections import defaultdict

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from sslsv_sb.distributed import is_distributed, rank, world_size

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


def state_tensors(modules):
    """``(name, tensor)`` of every floating-point parameter and persistent buffer.

    What a checkpoint of these modules holds (``state_dict``), DDP wrappers removed,
    each tensor once (shared ones under their first name).

    Arguments
    ---------
    modules : dict or iterable of (str, torch.nn.Module)
        Modules by name (e.g. a Brain's ``modules``); possibly DDP-wrapped.

    Returns
    -------
    list of (str, torch.Tensor)
        ``"<module>.<state key>"`` and the tensor (not copied).

    Example
    -------
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> [n for n, _ in state_tensors({"bn": bn})]
    ['bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var']
    """
    from sslsv_sb.distributed import unwrap

    items = modules.items() if hasattr(modules, "items") else modules
    seen, out = set(), []
    for key, module in items:
        for name, t in unwrap(module).state_dict(keep_vars=True).items():
            if t is None or not t.is_floating_point() or t.numel() == 0:
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            out.append((f"{key}.{name}", t.detach()))
    return out


@torch.no_grad()
def first_nonfinite(named_tensors, reduce_ranks=False):
    """Name of the first tensor holding a NaN or an Inf, or None.

    One fused 2-norm per (device, dtype) group (``torch._foreach_norm``) and one host
    read: a NaN or Inf element makes its tensor's norm non-finite. A finite tensor
    whose 2-norm overflows (values above ~1e19 in float32) is re-checked element
    by element (``torch.isfinite``), so only real NaN / Inf are reported. (The
    max-abs norm cannot overflow, but it is ~10x slower on CPU.)

    Arguments
    ---------
    named_tensors : list of (str, torch.Tensor)
        E.g. from :func:`state_tensors`.
    reduce_ranks : bool
        Under DDP, all-reduce the verdict so that every rank returns a name when
        any rank holds a non-finite tensor (``"<on another rank>"`` on a rank whose
        own tensors are finite). Every rank must then call this.

    Returns
    -------
    str or None

    Example
    -------
    >>> big = torch.tensor([1e38, 3e38])  # finite (its 2-norm overflows)
    >>> first_nonfinite([("a", torch.ones(2)), ("b", big)]) is None
    True
    >>> first_nonfinite([("a", torch.ones(2)), ("b", big * 2)])
    'b'
    """
    name = None
    if named_tensors:
        groups = {}
        for i, (_, t) in enumerate(named_tensors):
            groups.setdefault((t.device, t.dtype), []).append(i)
        device = named_tensors[0][1].device
        order, norms = [], []
        for idx in groups.values():
            group = torch._foreach_norm([named_tensors[i][1] for i in idx])
            norms.append(torch.stack(group).float().to(device))
            order.extend(idx)
        suspect = ~torch.isfinite(torch.cat(norms))
        if bool(suspect.any()):  # the one host read of the common case
            for j in sorted(order[k] for k in suspect.nonzero().flatten().tolist()):
                if not bool(torch.isfinite(named_tensors[j][1]).all()):
                    name = named_tensors[j][0]
                    break
    if reduce_ranks and is_distributed():
        import torch.distributed as dist

        device = named_tensors[0][1].device if named_tensors else "cpu"
        flag = torch.tensor(int(name is not None), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if bool(flag) and name is None:
            return "<on another rank>"
    return name


def _rng_state():
    """The RNG states of this process (tensors and plain types only)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    """Restore the RNG states of :func:`_rng_state`."""
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


def _derive_stream(r):
    """Re-seed every RNG from the current torch state and rank ``r``."""
    offset = int(torch.randint(2**31, (1,))) + r
    torch.manual_seed(offset)
    np.random.seed(offset % 2**32)
    random.seed(offset)


class RNGState:
    """Checkpointable RNG states of **every** DDP rank (torch CPU/CUDA, numpy global,
    python ``random``).

    Each rank draws its own on-device augmentations, MoCo shuffles and dropout masks,
    so each has its own RNG stream. SpeechBrain's ``Checkpointer`` writes files on
    rank 0 only, so :meth:`save` runs on every rank (registered with
    ``save_on_main_only=False``): the states are gathered to rank 0
    (``torch.distributed.gather_object``, which also works across nodes without a
    shared file system) and written there as one file, ``{"ranks": [state of rank 0,
    state of rank 1, ...]}``, before the checkpoint's completion marker. On resume
    every rank restores its own state, so a resumed DDP run draws what the
    uninterrupted one would have drawn.

    Resuming with another number of processes cannot be exact (the data shards
    change too): ranks the checkpoint has no state for derive a distinct stream from
    rank 0's state, with a warning. Single-state files of earlier versions load as
    rank 0's state. Saved with tensors and plain types only
    (``torch.load(weights_only=True)``).

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "rng.ckpt")
    >>> state = RNGState()
    >>> _ = torch.manual_seed(3)
    >>> state.save(path)
    >>> first = torch.rand(2)
    >>> state.load(path)
    >>> torch.equal(torch.rand(2), first)
    True
    """

    @mark_as_saver
    def save(self, path):
        """Write the RNG states of every rank to ``path`` (call it on every rank).

        A state still pending (a resume after the last batch of an epoch) is
        applied first: it is the state at this point of the uninterrupted run.
        """
        import torch.distributed as dist

        self.apply_pending()
        state = _rng_state()
        if is_distributed():
            states = [None] * world_size() if rank() == 0 else None
            dist.gather_object(state, states, dst=0)
        else:
            states = [state]
        if rank() == 0:
            torch.save({"ranks": states}, path)

    def __init__(self):
        self.pending = None

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Restore this rank's RNG states saved in ``path``.

        An end-of-epoch state is applied at once. An intra-epoch state is applied by
        :meth:`apply_pending` at the first training batch: the data loader draws its
        base seed from the global RNG when its iterator is created, which happens
        *after* recovery on a mid-epoch resume (and before the saved state in the
        uninterrupted run), so applying it earlier would shift every later draw.
        """
        saved = torch.load(path, weights_only=True)
        states = saved["ranks"] if "ranks" in saved else [saved]
        if len(states) != world_size():
            logger.warning(
                "%s holds the RNG states of %d process(es), resumed with %d: ranks "
                "without a saved state draw new streams (not an exact resume)",
                path,
                len(states),
                world_size(),
            )
        state = {"state": states[min(rank(), len(states) - 1)]}
        state["derive"] = rank() >= len(states)
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
        _set_rng_state(state["state"])
        if state["derive"]:
            _derive_stream(rank())


RNGState = register_checkpoint_hooks(RNGState, save_on_main_only=False)


@register_checkpoint_hooks
class EpochMetrics:
    """Running sums and counts of the metrics recorded in the running epoch.

    A checkpoint recoverable: an intra-epoch resume logs the same epoch means as
    the uninterrupted run (the sums are saved as exact Python floats, read back
    from their float64 tensors once per checkpoint). Written by rank 0, whose values
    are the logged ones.

    Example
    -------
    >>> m = EpochMetrics(); m.add("acc", torch.tensor(0.5)); m.add("acc", 1.0)
    >>> m.means()
    {'acc': 0.75}
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget the epoch's values."""
        self.sums = defaultdict(float)
        self.counts = defaultdict(int)

    def add(self, key, value):
        """Add one value (a float, or a tensor kept on its device)."""
        self.sums[key] = self.sums[key] + value
        self.counts[key] += 1

    def means(self):
        """``{key: mean}`` as plain floats (one host read per key)."""
        return {k: float(self.sums[k]) / max(1, self.counts[k]) for k in self.sums}

    @mark_as_saver
    def save(self, path):
        """Write the sums and counts."""
        state = {
            "sums": {k: float(v) for k, v in self.sums.items()},
            "counts": dict(self.counts),
        }
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Restore the sums and counts."""
        state = torch.load(path, weights_only=True)
        self.reset()
        self.sums.update(state["sums"])
        self.counts.update(state["counts"])


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
