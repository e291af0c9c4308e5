"""Scalar schedules shared by the self-supervised methods (pure Python floats).

* ``cosine_tau``: EMA momentum of the target / teacher network, cosine from ``start`` to
  ``end`` (BYOL, arXiv 2006.07733, sec. 3.2:
  ``tau = 1 - (1 - tau_base)(cos(pi k/K)+1)/2``; also MoCo/DINO in sslsv).
* ``dino_teacher_temp``: DINO teacher-temperature linear warm-up (arXiv 2104.14294,
  sec. 3.1 / appendix: 0.04 -> 0.07 over the first 30 epochs in the paper; sslsv keeps
  a constant 0.04 with ``warmup_epochs=10``).
* ``cosine_warmup_lr``: linear warm-up then cosine decay. Unlike sslsv's
  ``warmup+cosine`` (inventory §9 item 12) the cosine part spans exactly the steps left
  after the warm-up, so the schedule reaches ``min_lr`` at ``total_steps``.

All ``epoch`` arguments are **0-based** (sslsv convention). SpeechBrain's
``EpochCounter`` is 1-based: pass ``epoch - 1``.
"""

import math


def cosine_tau(step, total_steps, start=0.996, end=1.0):
    """Cosine EMA-momentum schedule, ``start`` at step 0 and ``end`` at ``total_steps``.

    Arguments
    ---------
    step : int
        Current global optimisation step (0-based).
    total_steps : int
        Number of steps of the whole training.
    start, end : float
        Momentum at the first and at the last step.

    Returns
    -------
    float

    Example
    -------
    >>> cosine_tau(0, 100), cosine_tau(100, 100)
    (0.996, 1.0)
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    progress = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


def dino_teacher_temp(
    epoch, teacher_temp=0.04, warmup_teacher_temp=0.04, warmup_epochs=0
):
    """DINO teacher temperature, linear ``warmup_teacher_temp`` -> ``teacher_temp``.

    Equals ``numpy.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)[epoch]``
    during the warm-up (as in the DINO code and sslsv), then ``teacher_temp``.

    Arguments
    ---------
    epoch : int
        0-based epoch.
    teacher_temp : float
        Temperature after the warm-up.
    warmup_teacher_temp : float
        Temperature at epoch 0.
    warmup_epochs : int
        Length of the warm-up (0: constant ``teacher_temp``).

    Returns
    -------
    float

    Example
    -------
    >>> round(dino_teacher_temp(1, 0.07, 0.04, 4), 3)
    0.05
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch}")
    if epoch >= warmup_epochs:
        return float(teacher_temp)
    if warmup_epochs == 1:
        return float(warmup_teacher_temp)
    frac = epoch / (warmup_epochs - 1)
    return float(warmup_teacher_temp + frac * (teacher_temp - warmup_teacher_temp))


def cosine_warmup_lr(step, total_steps, base_lr, warmup_steps=0, min_lr=0.0):
    """Learning rate with a linear warm-up followed by a cosine decay.

    ``lr = base_lr * step / warmup_steps`` for ``step < warmup_steps``, then
    ``min_lr + (base_lr - min_lr)(1 + cos(pi p))/2`` with
    ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1].

    Arguments
    ---------
    step : int
        Current global step (0-based).
    total_steps : int
        Total number of steps (warm-up included).
    base_lr : float
        Peak learning rate (reached at the end of the warm-up).
    warmup_steps : int
        Number of warm-up steps.
    min_lr : float
        Final learning rate.

    Returns
    -------
    float

    Example
    -------
    >>> cosine_warmup_lr(5, 20, 1.0, warmup_steps=10)
    0.5
    >>> cosine_warmup_lr(20, 20, 1.0, warmup_steps=10, min_lr=0.1)
    0.1
    """
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


class EpochStepDecay:
    """Step decay of the learning rate per epoch, counted as sslsv counts it.

    0-based epoch ``k`` trains at ``initial_value * decay_factor ** (k // decay_drop)``
    (sslsv's ``default`` schedule: x0.95 every 5 epochs, first drop before 0-based
    epoch 5). SpeechBrain's ``StepScheduler`` uses ``floor((1 + e) / decay_drop)`` with
    the 1-based epoch it is called with, which drops one epoch earlier (before 0-based
    epoch 4); this class keeps SpeechBrain's calling convention and sslsv's epochs.

    Arguments
    ---------
    initial_value : float
        Learning rate of the first epoch.
    decay_factor : float
        Multiplier applied every ``decay_drop`` epochs.
    decay_drop : int
        Number of epochs between two drops.

    Example
    -------
    >>> sched = EpochStepDecay(1.0, 0.5, 5)
    >>> [sched(e)[1] for e in range(1, 11)]  # LR of 0-based epochs 1..10
    [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]
    """

    def __init__(self, initial_value, decay_factor=0.95, decay_drop=5):
        if int(decay_drop) < 1:
            raise ValueError(f"decay_drop must be >= 1, got {decay_drop}")
        self.initial_value = float(initial_value)
        self.decay_factor = float(decay_factor)
        self.decay_drop = int(decay_drop)

    def value(self, epoch0):
        """Learning rate of 0-based epoch ``epoch0``."""
        exponent = int(epoch0) // self.decay_drop
        return self.initial_value * self.decay_factor**exponent

    def __call__(self, current_epoch):
        """``(lr of the epoch that ended, lr of the next one)``.

        ``current_epoch`` is SpeechBrain's 1-based epoch that just ended, i.e. the
        0-based index of the next epoch.
        """
        return self.value(current_epoch - 1), self.value(current_epoch)
