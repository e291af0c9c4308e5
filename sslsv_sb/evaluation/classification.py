"""Downstream classification probes on frozen embeddings.

- :func:`linear_probe`: standardised features + scikit-learn ``LogisticRegression``;
- :func:`mlp_probe`: standardised features + scikit-learn ``MLPClassifier`` (one
  hidden layer). We use scikit-learn rather than a torch MLP because the inputs are
  small, fixed ``(N, D)`` matrices: it gives early stopping, Adam, seeding and a
  deterministic CPU run in one call, with no training loop to maintain. Fine-tuning
  through the encoder is a Brain-level job (recipes), not done here.
- :func:`read_label_csv`: reads sslsv ``File,<label>[,Set]`` CSVs (e.g. CREMA-D
  emotion, VoxLingua107 language, VoxCeleb1 gender).

Both probes return ``{"accuracy", "f1_macro", "f1_weighted", "n_train", "n_test",
"n_classes"}`` (fractions in [0, 1]).
"""

import csv
from collections import namedtuple
from pathlib import Path

import numpy as np

from sslsv_sb.errors import SSLSVError, where

LabelRow = namedtuple("LabelRow", ["file", "label", "set"])


def _check_xy(name, x, y):
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).ravel()
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name}: features must be non-empty (N, D), got {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{name}: {len(x)} feature rows but {len(y)} labels")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or Inf")
    return x, y


def _evaluate(model, train_x, train_y, test_x, test_y):
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y = _check_xy("train", train_x, train_y)
    test_x, test_y = _check_xy("test", test_x, test_y)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"feature dims differ: {train_x.shape[1]} vs {test_x.shape[1]}"
        )
    if len(np.unique(train_y)) < 2:
        raise ValueError("train set needs at least 2 classes")
    pipe = make_pipeline(StandardScaler(), model).fit(train_x, train_y)
    pred = pipe.predict(test_x)
    return {
        "accuracy": float(accuracy_score(test_y, pred)),
        "f1_macro": float(f1_score(test_y, pred, average="macro", zero_division=0)),
        "f1_weighted": float(
            f1_score(test_y, pred, average="weighted", zero_division=0)
        ),
        "n_train": len(train_y),
        "n_test": len(test_y),
        "n_classes": len(np.unique(train_y)),
    }


def linear_probe(train_X, train_y, test_X, test_y, C=1.0, max_iter=1000):
    """Linear probe (multinomial logistic regression) on frozen embeddings.

    Arguments
    ---------
    train_X : array-like, (N_train, D)
    train_y : array-like, (N_train,)
        Class labels (strings or ints).
    test_X : array-like, (N_test, D)
    test_y : array-like, (N_test,)
    C : float
        Inverse L2 regularisation strength.
    max_iter : int

    Returns
    -------
    dict
        ``accuracy``, ``f1_macro``, ``f1_weighted`` (floats), ``n_train``,
        ``n_test``, ``n_classes``.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=max_iter)
    return _evaluate(model, train_X, train_y, test_X, test_y)


def mlp_probe(
    train_X,
    train_y,
    test_X,
    test_y,
    hidden=256,
    alpha=1e-4,
    max_iter=300,
    seed=0,
):
    """One-hidden-layer MLP probe (scikit-learn ``MLPClassifier``, ReLU, Adam).

    Early stopping on a 10 % split of the training set when it has at least 50
    rows.

    Arguments
    ---------
    train_X : array-like, (N_train, D)
    train_y : array-like, (N_train,)
    test_X : array-like, (N_test, D)
    test_y : array-like, (N_test,)
    hidden : int
        Hidden units.
    alpha : float
        L2 penalty.
    max_iter : int
        Epochs.
    seed : int

    Returns
    -------
    dict
        Same keys as :func:`linear_probe`.
    """
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        alpha=alpha,
        max_iter=max_iter,
        early_stopping=len(train_y) >= 50,
        random_state=seed,
    )
    return _evaluate(model, train_X, train_y, test_X, test_y)


def read_label_csv(path, label_key, data_folder=None, check_files=True):
    """Read an sslsv classification CSV ``File,<label_key>[,Set]``.

    Arguments
    ---------
    path : str or Path
        CSV with a header row.
    label_key : str
        Label column (e.g. ``Emotion``, ``Language``, ``Gender``, ``Speaker``).
    data_folder : str or Path, optional
        ``File`` values are relative to it (absolute paths are kept).
    check_files : bool
        Raise if an audio file does not exist.

    Returns
    -------
    list of LabelRow
        ``(file: str, label: str, set: str | None)`` per data row, in file order.

    Raises
    ------
    SSLSVError
        Missing CSV, missing ``File`` / label column (lists the header), empty
        value, or missing audio file; messages name ``path:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise SSLSVError(f"{path}: label CSV not found")
    root = Path(data_folder) if data_folder is not None else None
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise SSLSVError(f"{where(path, 1)}: empty CSV (no header)")
        header = [h.strip() for h in header]
        for col in ("File", label_key):
            if col not in header:
                raise SSLSVError(
                    f"{where(path, 1)}: missing column {col!r} (header: "
                    f"{','.join(header)})"
                )
        i_file = header.index("File")
        i_lab = header.index(label_key)
        i_set = header.index("Set") if "Set" in header else None
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise SSLSVError(
                    f"{where(path, line)}: {len(rec)} fields, header has {len(header)}"
                )
            file, label = rec[i_file].strip(), rec[i_lab].strip()
            if not file or not label:
                raise SSLSVError(f"{where(path, line)}: empty File or {label_key}")
            p = Path(file)
            if not p.is_absolute() and root is not None:
                p = root / p
            if check_files and not p.is_file():
                raise SSLSVError(f"{where(path, line)}: audio file not found: {p}")
            split = rec[i_set].strip() if i_set is not None else None
            rows.append(LabelRow(str(p), label, split))
    if not rows:
        raise SSLSVError(f"{path}: no data rows")
    return rows
