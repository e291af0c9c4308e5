"""Load a trained run and export its encoder for inference.

Three artefacts, all from the modules the method uses at evaluation
(:meth:`SSLBrain.inference_modules`, i.e. the DINO teacher for DINO):

- an **offline SpeechBrain bundle** (:func:`export_bundle`): a folder with a dedicated
  inference ``hyperparams.yaml`` (``compute_features``, ``mean_var_norm``,
  ``embedding_model``, ``modules``, ``pretrainer`` with ``loadables`` and no Hub
  ``paths``) and ``embedding_model.ckpt``. It loads with
  ``EncoderClassifier.from_hparams(source=<abs folder>, savedir=...)`` and
  ``SpeakerRecognition`` (``verify_files``) without network access;
- **TorchScript** (:func:`export_torchscript`): ``torch.jit.trace`` of
  :class:`EmbeddingPipeline`, ``wavs (B, L) -> embeddings (B, D)``, dynamic ``B`` and
  ``L``;
- **ONNX** (:func:`export_onnx`): the same pipeline, dynamic batch and time axes.

Two trace blockers are worked around *during export only* (the training code is
untouched): SpeechBrain's ``length_to_mask`` bakes the batch size into a trace
(``len(length)``), and the legacy ONNX exporter has no complex ``STFT``; the STFT is
replaced by the same real DFT as a strided ``conv1d`` (identical up to float
rounding). Every export is checked against the eager model before it is kept.

Checkpoint loading (:func:`load_model`) is shared by ``evaluate.py``,
``downstream.py`` and ``tools/export_model.py``.
"""

import contextlib
import json
import logging
import math
import os
import pickle
import re

import numpy as np
import torch
from torch import nn

from sslsv_sb.distributed import unwrap
from sslsv_sb.errors import SSLSVError

logger = logging.getLogger(__name__)

BUNDLE_MODULES = ("compute_features", "mean_var_norm", "embedding_model")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary name next to ``path``; on success it replaces ``path``.

    The file at ``path`` is either the old one or the complete new one, never a
    partial write; on an exception the temporary file is removed.

    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(out) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(out).read(), os.listdir(os.path.dirname(out))
    ('done', ['a.txt'])
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# --------------------------------------------------------------------- checkpoints
def find_checkpoints(
    checkpointer, which="last", best_key="train_loss", best_mode="min"
):
    """Checkpoints of a run, newest (or best) first.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
    which : str
        ``"last"``, ``"best"`` (by ``best_key`` in the checkpoint meta) or the path of
        one ``CKPT+...`` folder.
    best_key : str
        Meta key ranking the checkpoints for ``"best"``.
    best_mode : str
        ``"min"`` or ``"max"``.

    Returns
    -------
    list of speechbrain.utils.checkpoints.Checkpoint
    """
    folder = checkpointer.checkpoints_dir
    ckpts = checkpointer.list_checkpoints() if os.path.isdir(folder) else []
    if not ckpts:
        raise SSLSVError(
            f"{folder}: no checkpoint found (train the run first, or point "
            "--output_folder to a trained run)"
        )
    if which == "last":
        return sorted(ckpts, key=lambda c: c.meta["unixtime"], reverse=True)
    if which == "best":
        if best_mode not in ("min", "max"):
            raise SSLSVError(f"--best_mode must be min or max, got {best_mode!r}")
        missing = [c.path for c in ckpts if best_key not in c.meta]
        if missing:
            raise SSLSVError(
                f"{missing[0]}/CKPT.yaml: no meta key {best_key!r} (--best_key)"
            )
        return sorted(ckpts, key=lambda c: c.meta[best_key], reverse=best_mode == "max")
    path = os.path.abspath(str(which))
    match = [c for c in ckpts if os.path.abspath(str(c.path)) == path]
    names = [os.path.basename(str(c.path)) for c in ckpts]
    if not match:
        raise SSLSVError(
            f"--checkpoint={which}: not 'last', 'best' or a checkpoint folder of "
            f"{folder} (found: {', '.join(sorted(names))})"
        )
    return match


@contextlib.contextmanager
def _refuse_pickled_code(path):
    """Turn a refused ``torch.load(weights_only=True)`` under ``path`` into an
    :class:`SSLSVError` (one line) instead of torch's multi-line unpickling error.

    SpeechBrain's ``Checkpointer`` and our own loaders read every ``.ckpt`` file with
    ``weights_only=True``: a file holding other Python objects (which could run code
    when unpickled) is refused, and so is an unreadable one.
    """
    try:
        yield
    except pickle.UnpicklingError as err:
        text = " ".join(str(err).split())
        found = re.search(r"Unsupported global: GLOBAL \S+", text)
        if found:
            raise SSLSVError(
                f"{path}: refused: it holds Python objects other than tensors and "
                f"numbers ({found.group(0)}), and unpickling them could run code; "
                "only load runs from people you trust"
            ) from None
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Check the doc|$)", text)
        detail = found.group(1) if found else text[:200]
        raise SSLSVError(f"{path}: unreadable checkpoint file ({detail})") from None


def _load_weights(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``, refusals as :class:`SSLSVError`.

    The ``parameter_loader`` of SpeechBrain's ``average_checkpoints``, which passes
    ``map_location``. A truncated or garbled file is one error line too.
    """
    with _refuse_pickled_code(path):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except (RuntimeError, EOFError, ValueError, OSError) as err:
            detail = " ".join(str(err).split())[:200]
            raise SSLSVError(f"{path}: unreadable checkpoint file ({detail})") from None


def check_checkpoint_fits(checkpointer, ckpt, skip=()):
    """Check, before any work, that a checkpoint loads into the Brain's modules.

    Every ``nn.Module`` recoverable's ``<name>.ckpt`` of ``ckpt`` is read (weights
    only) and compared with the module: same parameter and buffer names, same
    shapes. Nothing is loaded.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
    ckpt : speechbrain.utils.checkpoints.Checkpoint
    skip : iterable of str
        Recoverables not checked (training-only state that is not loaded).

    Raises
    ------
    SSLSVError
        An unreadable file, or a module built from this yaml that the weights do not
        fit (the message names the first differing tensor and both shapes).
    """
    for name, obj in checkpointer.recoverables.items():
        path = os.path.join(str(ckpt.path), f"{name}.ckpt")
        if name in skip or not isinstance(obj, nn.Module) or not os.path.isfile(path):
            continue
        state = _load_weights(path)
        if not isinstance(state, dict):
            raise SSLSVError(f"{path}: not a state dict of {name}")
        own = unwrap(obj).state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [
            (k, tuple(state[k].shape), tuple(own[k].shape))
            for k in own
            if k in state
            and hasattr(state[k], "shape")
            and tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if wrong:
            k, theirs, ours = wrong[0]
            detail = f"{k} is {theirs} in the checkpoint, {ours} in the model"
        elif missing or unexpected:
            detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        else:
            continue
        raise SSLSVError(
            f"{path}: does not fit the {name} built from this yaml ({detail}); build "
            "it with the run's settings (its hyperparams.yaml: --channels, --emb_dim, "
            "...)"
        )


def training_only(brain):
    """Recoverables that inference neither checks nor loads: training-only state
    (e.g. the SSPS queues, sized by the train list at fit start), as named by the
    Brain's ``training_only_recoverables()``."""
    return set(getattr(brain, "training_only_recoverables", lambda: ())())


def load_model(
    brain, which="last", average_last=1, best_key="train_loss", best_mode="min"
):
    """Load a trained checkpoint (optionally an average) into a Brain.

    Arguments
    ---------
    brain : SSLBrain
        Built from the run's yaml, with its ``checkpointer``.
    which : str
        ``"last"``, ``"best"`` or a ``CKPT+...`` folder (see :func:`find_checkpoints`).
    average_last : int
        ``K > 1`` averages the module weights of the ``K`` first checkpoints in that
        order (SpeechBrain's ``average_checkpoints``); needs ``keep_checkpoints >= K``
        during training.
    best_key, best_mode : str
        Ranking for ``which="best"``.

    Returns
    -------
    dict
        ``{"checkpoints": [folder names], "epoch": int or None}`` for the run meta.
    """
    from speechbrain.utils.checkpoints import average_checkpoints

    checkpointer = brain.checkpointer
    if checkpointer is None:
        raise SSLSVError("the yaml defines no checkpointer (key 'checkpointer')")
    ckpts = find_checkpoints(checkpointer, which, best_key, best_mode)
    k = int(average_last)
    if k < 1:
        raise SSLSVError(f"--average_last must be >= 1, got {average_last}")
    if k > len(ckpts):
        raise SSLSVError(
            f"{checkpointer.checkpoints_dir}: --average_last={k} but only "
            f"{len(ckpts)} checkpoint(s) kept (train with --keep_checkpoints={k})"
        )
    chosen = ckpts[:k]
    skip = training_only(brain)
    for ckpt in chosen:
        check_checkpoint_fits(checkpointer, ckpt, skip)
    # Loads every other recoverable (modules, counters, brain state) of the first one.
    held = {
        n: checkpointer.recoverables.pop(n)
        for n in skip
        if n in checkpointer.recoverables
    }
    try:
        with _refuse_pickled_code(chosen[0].path):
            try:
                checkpointer.load_checkpoint(chosen[0])
            except (RuntimeError, KeyError, ValueError, EOFError, OSError) as err:
                detail = " ".join(str(err).split())[:200]
                raise SSLSVError(
                    f"{chosen[0].path}: cannot load ({type(err).__name__}: "
                    f"{detail}); the checkpoint is corrupt or from another "
                    "configuration"
                ) from None
    finally:
        checkpointer.recoverables.update(held)
    if k > 1:
        for name, obj in checkpointer.recoverables.items():
            if (
                name not in skip
                and isinstance(obj, nn.Module)
                and all(
                    os.path.isfile(os.path.join(c.path, f"{name}.ckpt")) for c in chosen
                )
            ):
                state = average_checkpoints(
                    chosen, name, parameter_loader=_load_weights
                )
                unwrap(obj).load_state_dict(state)
    return {
        "checkpoints": [os.path.basename(str(c.path)) for c in chosen],
        "epoch": chosen[0].meta.get("epoch"),
    }


def build_brain(hparams, run_opts=None, with_checkpointer=True):
    """Instantiate the yaml's ``brain_class`` for inference (no training state).

    Arguments
    ---------
    hparams : dict
        Loaded yaml (must name ``brain_class`` and ``modules``).
    run_opts : dict or None
        SpeechBrain run options (device, precision, ...).
    with_checkpointer : bool
        Pass the yaml's ``checkpointer`` (needed by :func:`load_model`).

    Returns
    -------
    SSLBrain
    """
    for key in ("brain_class", "modules"):
        if key not in hparams:
            raise SSLSVError(f"the yaml has no {key!r} key")
    return hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams.get("opt_class"),
        hparams=hparams,
        run_opts=dict(run_opts or {}),
        checkpointer=hparams.get("checkpointer") if with_checkpointer else None,
    )


# ------------------------------------------------------------------------ pipeline
class EmbeddingPipeline(nn.Module):
    """Waveforms to embeddings, exactly like :meth:`SSLBrain.encode` on full inputs.

    Arguments
    ---------
    compute_features, mean_var_norm, embedding_model : nn.Module
        The inference modules (copied by reference).

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from sslsv_sb.models.encoders import ECAPAEncoder
    >>> pipe = EmbeddingPipeline(
    ...     Fbank(n_mels=40),
    ...     InputNormalization(norm_type="sentence", std_norm=False),
    ...     ECAPAEncoder(40, lin_neurons=8, channels=[8, 8, 8, 8, 24]),
    ... ).eval()
    >>> pipe(torch.randn(2, 8000)).shape
    torch.Size([2, 8])
    """

    def __init__(self, compute_features, mean_var_norm, embedding_model):
        super().__init__()
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, wavs):
        """``wavs (B, L)`` float32 at 16 kHz -> ``(B, D)`` (not L2-normalised)."""
        lengths = torch.ones_like(wavs[:, 0])
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, lengths)
        emb = self.embedding_model(feats, lengths)
        return emb.reshape(emb.shape[0], -1)


def _trace_length_to_mask(length, max_len=None, dtype=None, device=None):
    """``length_to_mask`` without ``len(length)`` (keeps the batch axis dynamic)."""
    if max_len is None:
        max_len = length.max().long().item()
    steps = torch.arange(max_len, device=length.device, dtype=length.dtype)
    mask = steps.unsqueeze(0) < length.unsqueeze(1)
    return mask.to(dtype=dtype or length.dtype, device=device or length.device)


def _conv_stft_forward(self, x):
    """SpeechBrain ``STFT.forward`` as a real DFT by ``conv1d`` (ONNX-exportable).

    Same output as ``torch.stft(..., return_complex=True)`` + ``view_as_real``:
    ``(B, T, n_fft // 2 + 1, 2)`` for ``x (B, L)``.
    """
    if x.dim() != 2 or not self.onesided:
        raise SSLSVError("ONNX export supports single-channel onesided STFT only")
    n_fft, hop = self.n_fft, self.hop_length
    window = self.window.to(x.device, torch.float32)
    left = (n_fft - window.shape[0]) // 2
    window = nn.functional.pad(window, (left, n_fft - window.shape[0] - left))
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    ang = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    w = window.double()[None, :]
    kernel = torch.cat([torch.cos(ang) * w, -torch.sin(ang) * w]).float()
    if self.normalized_stft:
        kernel = kernel / math.sqrt(n_fft)
    x = x.unsqueeze(1)
    if self.center:
        x = nn.functional.pad(x, (n_fft // 2, n_fft // 2), mode=self.pad_mode)
    out = nn.functional.conv1d(x, kernel.unsqueeze(1).to(x.device), stride=hop)
    n_bins = n_fft // 2 + 1
    spec = torch.stack([out[:, :n_bins], out[:, n_bins:]], dim=-1)  # (B, F, T, 2)
    return spec.transpose(2, 1)


@contextlib.contextmanager
def _export_patches(conv_stft=False):
    """Temporarily make SpeechBrain modules traceable (see the module docstring)."""
    import speechbrain.lobes.models.ECAPA_TDNN as ecapa
    import speechbrain.processing.features as feats

    saved = ecapa.length_to_mask, feats.STFT.forward
    ecapa.length_to_mask = _trace_length_to_mask
    if conv_stft:
        feats.STFT.forward = _conv_stft_forward
    try:
        yield
    finally:
        ecapa.length_to_mask, feats.STFT.forward = saved


def _inference_pipeline(brain):
    mods = [unwrap(m) for m in brain.inference_modules()]
    return EmbeddingPipeline(*mods).to("cpu").eval()


def compare(a, b):
    """``{"max_abs_diff", "min_cosine"}`` between two ``(B, D)`` embedding batches."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float32).reshape(len(a), -1)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float32).reshape(len(b), -1)
    cos = nn.functional.cosine_similarity(a, b, dim=-1)
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "min_cosine": float(cos.min()),
    }


def _check(name, ref, got, atol=1e-4):
    c = compare(ref, got)
    if not (c["max_abs_diff"] < atol and c["min_cosine"] > 0.9999):
        raise SSLSVError(f"{name} export differs from the eager model ({c}); not kept")
    return c


def _test_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 16000, generator=g), torch.randn(3, 27200, generator=g)]


# ---------------------------------------------------------------------- torchscript
def export_torchscript(pipeline, path, example_len=32000):
    """Trace the pipeline to TorchScript and check it on two other shapes.

    Arguments
    ---------
    pipeline : EmbeddingPipeline
    path : str
        Output ``.pt`` file (load with ``torch.jit.load``).
    example_len : int
        Samples of the tracing example.

    Returns
    -------
    dict
        Agreement with eager on ``(2, 16000)`` and ``(3, 27200)`` inputs.
    """
    import warnings

    pipeline = pipeline.eval()
    example = torch.randn(2, example_len, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), _export_patches(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(pipeline, example, check_trace=False)
    checks = {}
    with torch.no_grad():
        for x in _test_inputs():
            checks[f"{tuple(x.shape)}"] = _check("TorchScript", pipeline(x), traced(x))
    with atomic_path(path) as tmp:
        traced.save(tmp)
    return checks


# ----------------------------------------------------------------------------- onnx
def export_onnx(pipeline, path, example_len=32000, opset=17):
    """Export the pipeline to ONNX (dynamic ``batch`` and ``time`` axes).

    Uses the TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs
    ``onnxscript``) with the conv1d STFT. Input ``wavs`` ``(B, L)`` float32, output
    ``embeddings`` ``(B, D)``. Checked with onnxruntime when it is installed.

    Returns
    -------
    dict
        Agreement with eager per test shape (empty without onnxruntime).

    Raises
    ------
    SSLSVError
        Unsupported operator (the message names it) or a mismatch.
    """
    with atomic_path(path) as tmp:  # checked before it replaces ``path``
        return _export_onnx(pipeline, tmp, example_len, opset, name=path)


def _export_onnx(pipeline, path, example_len, opset, name):
    """:func:`export_onnx` into ``path`` (``name``: the final path, for messages)."""
    import warnings

    pipeline = pipeline.eval()
    example = torch.randn(2, example_len, generator=torch.Generator().manual_seed(1))
    try:
        with (
            torch.no_grad(),
            _export_patches(conv_stft=True),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                pipeline,
                (example,),
                path,
                input_names=["wavs"],
                output_names=["embeddings"],
                dynamic_axes={
                    "wavs": {0: "batch", 1: "time"},
                    "embeddings": {0: "batch"},
                },
                opset_version=opset,
                dynamo=False,
            )
    except SSLSVError:
        raise
    except Exception as err:  # noqa: BLE001 - exporter raises many types
        msg = " ".join(str(err).split())[:400]
        raise SSLSVError(
            f"ONNX export failed ({type(err).__name__}: {msg}); the bundle and "
            "TorchScript exports are unaffected"
        ) from err
    try:
        import onnxruntime as ort
    except ImportError:
        logger.warning("onnxruntime not installed: %s not checked", name)
        return {}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    checks = {}
    with torch.no_grad():
        for x in _test_inputs():
            got = sess.run(None, {"wavs": x.numpy()})[0]
            checks[f"{tuple(x.shape)}"] = _check("ONNX", pipeline(x), got)
    return checks


# --------------------------------------------------------------------------- bundle
def _module_nodes(run_hparams_file):
    """Yaml nodes of ``modules.{compute_features,mean_var_norm,embedding_model}``."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    with open(run_hparams_file, encoding="utf-8") as f:
        doc = yaml.load(f)
    mods = doc.get("modules") if hasattr(doc, "get") else None
    if mods is None:
        raise SSLSVError(f"{run_hparams_file}: no 'modules' key")
    nodes = {}
    for key in BUNDLE_MODULES:
        if key not in mods:
            raise SSLSVError(f"{run_hparams_file}: no 'modules.{key}'")
        node = mods[key]
        tag = getattr(getattr(node, "tag", None), "value", None)
        if not tag or not tag.startswith("!new:"):
            raise SSLSVError(
                f"{run_hparams_file}: modules.{key} is not a resolved '!new:' object "
                f"(tag {tag!r}); export needs the run's saved hyperparams.yaml"
            )
        nodes[key] = node
    return nodes


def _emit(value, indent):
    """Minimal YAML emitter for resolved HyperPyYAML nodes (tags kept)."""
    pad = " " * indent
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, dict):
        head = f" {tag}" if tag else ""
        if not value:
            return f"{head} {{}}" if tag else " {}"
        lines = [head]
        for k, v in value.items():
            lines.append(f"\n{pad}{k}:{_emit(v, indent + 4)}")
        return "".join(lines)
    if isinstance(value, (list, tuple)):
        if tag:
            raise SSLSVError(f"cannot export tagged sequence {tag}")
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return " [" + ", ".join(_emit(v, 0).strip() for v in value) + "]"
        return "".join(f"\n{pad}-{_emit(v, indent + 2)}" for v in value)
    if tag:  # tagged scalar, e.g. !name:torch.nn.ReLU
        text = str(value) if value is not None and str(value) != "" else ""
        return f" {tag} {json.dumps(text)}" if text else f" {tag}"
    if isinstance(value, bool):
        return " true" if value else " false"
    if value is None:
        return " null"
    if isinstance(value, (int, float)):
        return f" {value!r}"
    return f" {json.dumps(str(value))}"


def write_bundle_yaml(nodes, path, meta):
    """Write the inference ``hyperparams.yaml`` of a bundle."""
    lines = [
        "# Inference bundle written by sslsv_sb.export (not a training yaml).",
        "# Load offline: EncoderClassifier.from_hparams(source=<absolute folder>,",
        "#     savedir=<another folder>) or SpeakerRecognition (verify_files).",
        f"# Exported from: {meta.get('run_folder')}",
        f"# Checkpoint(s): {', '.join(meta.get('checkpoints', []))}",
        "# embedding_model returns (B, D) (no channel axis); cosine uses dim -1.",
        "# encode_batch(normalize=True) is not supported (no mean_var_norm_emb):",
        "# SSL embeddings are scored with cosine on raw embeddings.",
        "",
        f"sample_rate: {int(meta.get('sample_rate', 16000))}",
        "",
    ]
    for key in BUNDLE_MODULES:
        lines.append(f"{key}:{_emit(nodes[key], 4)}")
        lines.append("")
    lines += [
        "modules:",
        *(f"    {k}: !ref <{k}>" for k in BUNDLE_MODULES),
        "",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
        *(f"        {k}: !ref <{k}>" for k in meta["loadables"]),
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def export_bundle(brain, run_hparams_file, out_dir, meta=None):
    """Write an offline SpeechBrain inference bundle and verify it loads back.

    Arguments
    ---------
    brain : SSLBrain
        With the trained weights loaded (see :func:`load_model`).
    run_hparams_file : str
        The run's resolved ``hyperparams.yaml`` (written by training); the
        constructor arguments of the three modules are taken from it.
    out_dir : str
        Bundle folder (created).
    meta : dict or None
        Extra provenance written to ``export.json``.

    Returns
    -------
    dict
        Agreement of the reloaded bundle with :meth:`brain.encode`.
    """
    from hyperpyyaml import load_hyperpyyaml

    os.makedirs(out_dir, exist_ok=True)
    meta = dict(meta or {})
    nodes = _module_nodes(run_hparams_file)
    mods = dict(zip(BUNDLE_MODULES, (unwrap(m) for m in brain.inference_modules())))
    loadables = [k for k in BUNDLE_MODULES if mods[k].state_dict()]
    meta["loadables"] = loadables
    meta.setdefault("sample_rate", getattr(brain.hparams, "sample_rate", 16000))
    yaml_path = os.path.join(out_dir, "hyperparams.yaml")
    names = ["hyperparams.yaml", *(f"{k}.ckpt" for k in loadables), "export.json"]
    with contextlib.ExitStack() as stack:
        # Every file is written under a temporary name, checked, then renamed: a
        # failed or interrupted export leaves the folder as it was.
        tmp = {
            n: stack.enter_context(atomic_path(os.path.join(out_dir, n))) for n in names
        }
        write_bundle_yaml(nodes, tmp["hyperparams.yaml"], meta)
        for k in loadables:
            state = {n: t.detach().cpu() for n, t in mods[k].state_dict().items()}
            torch.save(state, tmp[f"{k}.ckpt"])
        # Strict check: the bundle's classes accept exactly these weights.
        with open(tmp["hyperparams.yaml"], encoding="utf-8") as f:
            fresh = load_hyperpyyaml(f)
        for k in loadables:
            state = torch.load(tmp[f"{k}.ckpt"], map_location="cpu", weights_only=True)
            try:
                fresh[k].load_state_dict(state, strict=True)
            except RuntimeError as err:
                msg = " ".join(str(err).split())[:300]
                raise SSLSVError(
                    f"{yaml_path}: {k} built from the run's yaml does not match the "
                    f"inference module's weights ({msg})"
                ) from err
        pipe = EmbeddingPipeline(*(fresh[k] for k in BUNDLE_MODULES)).eval()
        checks = {}
        with torch.no_grad():
            for x in _test_inputs():
                ref = brain.encode(x).cpu()
                checks[f"{tuple(x.shape)}"] = _check("bundle", ref, pipe(x), atol=1e-5)
        meta["checks"] = checks
        with open(tmp["export.json"], "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True, default=str)
    return checks


def load_bundle(folder, savedir, cls="EncoderClassifier", device="cpu"):
    """Load a bundle offline with SpeechBrain's inference interface.

    Arguments
    ---------
    folder : str
        The bundle folder; must exist (a missing *local* folder would otherwise be
        taken for a Hugging Face repo id and fetched from the network).
    savedir : str
        Where SpeechBrain links the files (must differ from ``folder`` or be it).
    cls : str
        ``"EncoderClassifier"`` or ``"SpeakerRecognition"``.
    device : str

    Returns
    -------
    speechbrain.inference.speaker.EncoderClassifier or SpeakerRecognition
    """
    from speechbrain.inference import speaker
    from speechbrain.utils.fetching import FetchConfig

    folder = os.path.abspath(str(folder))
    if not os.path.isdir(folder) or not os.path.isfile(
        os.path.join(folder, "hyperparams.yaml")
    ):
        raise SSLSVError(f"{folder}: not an exported bundle (no hyperparams.yaml)")
    return getattr(speaker, cls).from_hparams(
        source=folder,
        savedir=os.path.abspath(str(savedir)),
        run_opts={"device": device},
        fetch_config=FetchConfig(allow_network=False),
    )


def export_run(
    brain,
    run_hparams_file,
    out_dir,
    formats=("bundle", "torchscript", "onnx"),
    meta=None,
):
    """Write the requested exports of a loaded Brain into ``out_dir``.

    Returns
    -------
    dict
        ``{format: checks dict or {"error": message}}``; an ONNX failure is reported
        (not raised) so the other exports are still written.
    """
    unknown = set(formats) - {"bundle", "torchscript", "onnx"}
    if unknown:
        raise SSLSVError(f"--formats: unknown format(s) {sorted(unknown)}")
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    if "bundle" in formats:
        report["bundle"] = export_bundle(brain, run_hparams_file, out_dir, meta)
    pipe = _inference_pipeline(brain)
    if "torchscript" in formats:
        report["torchscript"] = export_torchscript(
            pipe, os.path.join(out_dir, "embedding_pipeline.ts.pt")
        )
    if "onnx" in formats:
        try:
            report["onnx"] = export_onnx(
                pipe, os.path.join(out_dir, "embedding_pipeline.onnx")
            )
        except SSLSVError as err:
            logger.warning("%s", err)
            report["onnx"] = {"error": str(err)}
    return report
