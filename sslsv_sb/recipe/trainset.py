"""Train-set construction shared by ``train.py`` and the benchmarks.

:func:`build_train_set` builds what a Brain trains on, in this order (so the cheap
configuration errors come first): the :class:`~sslsv_sb.data.sampling.EpochState`
shared by the sampler and the Brain, the per-process loader options
(:func:`loader_options`), the augmentation banks, and the
``DynamicItemDataset`` whose pipeline reads only the crops of each view
(:func:`make_train_set`).

A batch of the dataset holds ``id``, ``index``, the view keys of the
:class:`~sslsv_sb.data.sampling.ViewSampler` (each view group a ``(B, V, L)``
waveform tensor) and, with ``label_key``, the integer class ``label``.
"""

import os
from dataclasses import dataclass

import pandas as pd
import speechbrain as sb
from speechbrain.utils.data_pipeline import GeneratorDynamicItem

from sslsv_sb.data.lists import read_train_list, resolve
from sslsv_sb.data.sampling import EpochState, ViewSampler
from sslsv_sb.errors import SSLSVError


@dataclass
class TrainSet:
    """What a training run needs besides the Brain.

    Attributes
    ----------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The train set (one item per utterance of the train list).
    table : pandas.DataFrame
        The train list as read (``path``, ``line``, ``File``, ``label``...), in the
        dataset's order.
    epoch_state : EpochState
        Epoch counter shared by the sampler (crop draws) and the Brain.
    loader_kwargs : dict
        ``train_loader_kwargs`` for ``Brain.fit`` (per-process batch size).
    """

    dataset: sb.dataio.dataset.DynamicItemDataset
    table: pd.DataFrame
    epoch_state: EpochState
    loader_kwargs: dict


def resolve_num_workers(value, world=1):
    """``num_workers: auto`` -> loader workers that leave the model its cores.

    On a small CPU machine the model step uses every core and loader workers slow it
    down more than they save (``docs/benchmarks.md``: 2 cores, 0 workers is fastest);
    with spare cores (GPU training) up to 4 workers per process read and augment.

    Arguments
    ---------
    value : int, str
        An integer (or its string) or ``"auto"``.
    world : int
        Number of training processes sharing the machine.

    Returns
    -------
    int
    """
    if value != "auto":
        try:
            return int(value)
        except (TypeError, ValueError) as err:
            raise SSLSVError(
                f"num_workers must be an integer or auto, got {value!r}"
            ) from err
    spare = (os.cpu_count() or 1) // max(1, world) - 2
    return max(0, min(4, spare))


def loader_options(hparams, world=None):
    """Per-process train loader options from the yaml's ``dataloader_options``.

    The yaml's ``batch_size`` is the global batch: each of the ``world`` DDP
    processes loads its share. ``num_workers`` goes through
    :func:`resolve_num_workers`.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters (``dataloader_options``).
    world : int or None
        Number of processes (default: ``$WORLD_SIZE`` or 1).

    Returns
    -------
    dict
        A copy of ``dataloader_options`` with the per-process ``batch_size`` and an
        integer ``num_workers``.

    Raises
    ------
    SSLSVError
        A batch not divisible by the processes, or ``persistent_workers: True``.
    """
    if world is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    kwargs = dict(hparams["dataloader_options"])
    if kwargs.get("persistent_workers"):
        # A persistent worker keeps the crop sampler state of its first epoch (the
        # same crops every epoch), and it outlives fit(): the workers ignore the stop
        # signals (GracefulStop), so the process would not exit.
        raise SSLSVError(
            "dataloader_options: persistent_workers: True is not supported (workers "
            "would reuse their first epoch's crops); leave it unset"
        )
    kwargs["num_workers"] = resolve_num_workers(kwargs.get("num_workers", 0), world)
    if world > 1:
        if kwargs["batch_size"] % world:
            raise SSLSVError(
                f"batch_size {kwargs['batch_size']} is not divisible by the "
                f"{world} processes"
            )
        kwargs["batch_size"] //= world
    return kwargs


def _same_speaker_partners(hparams, df):
    """Other utterances of each utterance's speaker (``positive_pairs``)."""
    if hparams.get("positive_pairs", "same_utterance") != "same_speaker":
        return None
    # Supervised positives: the second view comes from another utterance of the
    # same speaker (sslsv's "_sup" configs); needs a label column.
    if not hparams.get("label_key"):
        raise SSLSVError("positive_pairs: same_speaker needs label_key (Speaker)")
    groups = df.groupby("label").indices
    paths = df["path"].to_numpy()
    return [
        [paths[j] for j in groups[lab] if j != i] for i, lab in enumerate(df["label"])
    ]


def read_train_table(hparams, data_folder, keep=False):
    """The yaml's train list read with its audio policy: ``(table, list path)``.

    With ``check_audio`` (default True) every file's header is read
    (:func:`sslsv_sb.data.lists.read_train_list` with ``sample_rate``): an
    unreadable file or another sample rate stops with the list line, files shorter
    than ``min_duration`` seconds (default 0.5) are dropped
    (:func:`sslsv_sb.data.lists.audio_policy_notes` words what was done;
    :func:`sslsv_sb.recipe.validate.validate_run` logs it). ``check_audio: False``
    only checks that the files exist. ``keep``: the next identical read (the train
    set built after the checks) gets the table without scanning again.
    """
    list_path = resolve(hparams["train_list"], data_folder)
    check_audio = hparams.get("check_audio", True)
    df = read_train_list(
        list_path,
        data_folder,
        label_key=hparams.get("label_key"),
        sample_rate=hparams["sample_rate"] if check_audio else None,
        min_duration=hparams.get("min_duration", 0.5),
        keep=keep,
    )
    return df, list_path


def check_train_table(hparams, df, list_path):
    """One batch at least; labels when needed; no more classes than the classifier.

    Raises
    ------
    SSLSVError
        Naming the list and the key to change.
    """
    pairs = hparams.get("positive_pairs", "same_utterance")
    if pairs not in ("same_utterance", "same_speaker"):
        raise SSLSVError(
            f"positive_pairs: {pairs!r} is neither same_utterance nor same_speaker"
        )
    if pairs == "same_speaker" and not hparams.get("label_key"):
        raise SSLSVError("positive_pairs: same_speaker needs label_key (Speaker)")
    batch = hparams["dataloader_options"]["batch_size"]
    if len(df) < batch and hparams["dataloader_options"].get("drop_last", True):
        dropped = df.attrs.get("dropped")
        after = ""
        if dropped is not None and len(dropped):
            after = (
                f" after dropping {len(dropped)} shorter than min_duration "
                f"{df.attrs['min_duration']} s"
            )
        raise SSLSVError(
            f"{list_path}: {len(df)} utterances{after}, fewer than one batch of "
            f"{batch} (lower --batch_size)"
        )
    n_classes = hparams.get("n_classes")
    if hparams.get("label_key") and n_classes is not None:
        found = df["label"].nunique()
        if found > int(n_classes):
            raise SSLSVError(
                f"{list_path}: {found} classes in column '{hparams['label_key']}' but "
                f"n_classes is {n_classes} (set --n_classes={found})"
            )


def make_train_set(hparams, data_folder, epoch_state):
    """``DynamicItemDataset`` whose pipeline reads only the crops of each view.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters (``train_list``, ``label_key``, ``view_groups``,
        ``seed``, ``sample_rate``, ``positive_pairs``, ``augment_in_workers``,
        ``dataloader_options``, ``n_classes``; ``check_audio`` and
        ``min_duration``: :func:`read_train_table`).
    data_folder : str
        Folder the train list's paths are relative to.
    epoch_state : EpochState
        Shared with the Brain: the sampler draws crops per (seed, epoch, index).

    Returns
    -------
    (DynamicItemDataset, pandas.DataFrame)
        The dataset and the train list it was built from.
    """
    df, list_path = read_train_table(hparams, data_folder)
    data = {
        f"u{i}": {"path": p, "index": i, "line": int(line)}
        for i, (p, line) in enumerate(zip(df["path"], df["line"]))
    }
    if hparams.get("label_key"):
        classes = {c: i for i, c in enumerate(sorted(set(df["label"])))}
        for item, lab in zip(data.values(), df["label"]):
            item["label"] = classes[lab]
    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    partners = _same_speaker_partners(hparams, df)
    augment = None
    if hparams.get("augment_in_workers") and "augment" in hparams["modules"]:
        augment = hparams["modules"]["augment"]
    sampler = ViewSampler(
        hparams["view_groups"],
        seed=hparams["seed"],
        epoch_state=epoch_state,
        sample_rate=hparams["sample_rate"],
        partners=partners,
        augment=augment,
        augment_keys=[
            k for k in ("views", "local_views") if k in hparams["view_groups"]
        ],
    )
    dataset.add_dynamic_item(
        GeneratorDynamicItem(
            func=sampler.generate, takes=["path", "index"], provides=sampler.keys
        )
    )
    keys = ["id", "index", *sampler.keys]
    if hparams.get("label_key"):
        # Integer class ids in sorted label order (supervised baseline, monitoring).
        keys.append("label")
    dataset.set_output_keys(keys)
    check_train_table(hparams, df, list_path)
    return dataset, df


def build_train_set(hparams, world=None):
    """Epoch state, loader options, augmentation banks and the train set.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters (``data_folder``, ``seed``, ``modules`` and the keys
        of :func:`make_train_set`).
    world : int or None
        Number of training processes (default: ``$WORLD_SIZE`` or 1).

    Returns
    -------
    TrainSet
    """
    data_folder = hparams["data_folder"]
    epoch_state = EpochState()
    loader_kwargs = loader_options(hparams, world)
    if "augment" in hparams["modules"]:
        hparams["modules"]["augment"].load(data_folder, seed=hparams["seed"])
    dataset, df = make_train_set(hparams, data_folder, epoch_state)
    return TrainSet(dataset, df, epoch_state, loader_kwargs)
