"""Affine score calibration to log-likelihood ratios (BOSARIS-style).

``llr = a * score + b`` is trained by prior-weighted logistic regression on the scores
of a held-out trial list (Brümmer & du Preez 2006; BOSARIS ``train_linear_fusion``):
target trials get total weight ``p_target`` and non-target trials ``1 - p_target``
(whatever their counts), and the logistic model predicts the posterior log-odds
``a * score + b + logit(p_target)``, so ``a * score + b`` is an LLR. The weighted
cross-entropy is then the Cllr at the effective prior ``p_target`` (up to a
constant), and the fitted map is the one that minimises it.

Apply the calibrator to *other* lists' scores, then measure
:func:`sslsv_sb.evaluation.metrics.act_dcf` / ``cllr``.
"""

import json
import math
from pathlib import Path

import numpy as np

from sslsv_sb.errors import SSLSVError


class Calibrator:
    """Affine score-to-LLR calibration.

    Arguments
    ---------
    a, b : float, optional
        Known parameters (``llr = a * score + b``); normally set by :meth:`fit`.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random(4000) < 0.5
    >>> s = rng.normal(size=4000) + 2 * y
    >>> cal = Calibrator().fit(s, y, p_target=0.5)
    >>> round(cal.a, 1), round(cal.b, 1)  # true LLR: 2 * s - 2
    (2.0, -2.0)
    """

    def __init__(self, a=None, b=None, p_target=None):
        self.a = None if a is None else float(a)
        self.b = None if b is None else float(b)
        self.p_target = p_target

    def fit(self, scores, labels, p_target=0.01):
        """Train on held-out trial scores.

        Arguments
        ---------
        scores : array-like, (n,)
        labels : array-like, (n,)
            1 / True for target trials.
        p_target : float
            Effective prior the calibration is optimised for.

        Returns
        -------
        self
        """
        from sklearn.linear_model import LogisticRegression

        if not 0.0 < p_target < 1.0:
            raise ValueError(f"p_target must be in (0, 1), got {p_target}")
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(labels).ravel().astype(bool)
        if s.shape != y.shape:
            raise ValueError(f"scores and labels differ: {s.size} vs {y.size}")
        if not y.any() or y.all():
            raise ValueError("calibration needs target and non-target trials")
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or Inf")
        n_tar = np.count_nonzero(y)
        n_non = y.size - n_tar
        # Prior weighting; rescaled so weights sum to n (keeps lbfgs tolerances sane).
        w = np.where(y, p_target / n_tar, (1.0 - p_target) / n_non) * y.size
        # Standardise for conditioning, undo afterwards.
        mu, sd = s.mean(), s.std()
        sd = sd if sd > 0 else 1.0
        lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
        lr.fit(((s - mu) / sd)[:, None], y, sample_weight=w)
        coef = float(lr.coef_[0, 0]) / sd
        icpt = float(lr.intercept_[0]) - coef * mu
        self.a = float(coef)
        self.b = float(icpt - math.log(p_target / (1.0 - p_target)))
        self.p_target = float(p_target)
        return self

    def transform(self, scores):
        """Map scores to LLRs.

        Arguments
        ---------
        scores : array-like, (n,)

        Returns
        -------
        np.ndarray, (n,), float64
        """
        if self.a is None:
            raise RuntimeError("Calibrator.transform called before fit/load")
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def to_dict(self):
        """``{"a": float, "b": float, "p_target": float | None}``."""
        return {"a": self.a, "b": self.b, "p_target": self.p_target}

    def save(self, path):
        """Write the parameters as JSON; returns the path."""
        if self.a is None:
            raise RuntimeError("nothing to save: Calibrator not fitted")
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)  # atomic: never a half-written file
        return path

    @classmethod
    def load(cls, path):
        """Read a calibrator written by :meth:`save`.

        Raises
        ------
        SSLSVError
            Missing file, invalid JSON or missing / non-numeric ``a`` / ``b``.
        """
        path = Path(path)
        if not path.is_file():
            raise SSLSVError(f"{path}: calibration file not found")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SSLSVError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
        try:
            a, b = float(d["a"]), float(d["b"])
        except (KeyError, TypeError, ValueError) as err:
            raise SSLSVError(
                f"{path}: expected numeric keys 'a' and 'b', got {d!r}"
            ) from err
        return cls(a, b, d.get("p_target"))
