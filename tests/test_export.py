"""Exports: offline SpeechBrain bundle, TorchScript and ONNX agree with brain.encode."""

import os
import socket

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from sslsv_sb.errors import SSLSVError  # noqa: E402
from sslsv_sb.export import (  # noqa: E402
    EmbeddingPipeline,
    compare,
    export_onnx,
    export_torchscript,
    load_bundle,
)


def _close(a, b, atol=1e-4):
    c = compare(a, b)
    assert c["max_abs_diff"] < atol and c["min_cosine"] > 0.9999, c


def _tiny_pipeline():
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    from sslsv_sb.models.encoders import ECAPAEncoder

    torch.manual_seed(0)
    return EmbeddingPipeline(
        Fbank(n_mels=40),
        InputNormalization(norm_type="sentence", std_norm=False),
        ECAPAEncoder(40, lin_neurons=8, channels=[8, 8, 8, 8, 24]),
    ).eval()


WAVS = [torch.randn(2, 12000), torch.randn(1, 20800), torch.randn(4, 16000)]


def test_torchscript_dynamic_shapes(tmp_path):
    pipe = _tiny_pipeline()
    export_torchscript(pipe, str(tmp_path / "m.pt"), example_len=16000)
    ts = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        for x in WAVS:
            _close(pipe(x), ts(x))


def test_onnx_dynamic_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pipe = _tiny_pipeline()
    export_onnx(pipe, str(tmp_path / "m.onnx"), example_len=16000)
    sess = ort.InferenceSession(
        str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]
    )
    with torch.no_grad():
        for x in WAVS:
            _close(pipe(x), sess.run(None, {"wavs": x.numpy()})[0])


def test_missing_bundle_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(SSLSVError, match="not an exported bundle"):
        load_bundle(tmp_path / "does_not_exist", tmp_path / "sd")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_corpus):
    from hyperpyyaml import load_hyperpyyaml

    from sslsv_sb.export import build_brain, load_model
    from sslsv_sb.recipe.tools.export_model import main as export_main
    from tests.recipes.test_evaluate import get_trained_run

    run = get_trained_run(tmp_path_factory, tiny_corpus)
    out = tmp_path_factory.mktemp("export") / "bundle"
    report = export_main([str(run), str(out)])
    with open(run / "hyperparams.yaml") as f:
        hparams = load_hyperpyyaml(f)
    brain = build_brain(hparams, {"device": "cpu"})
    load_model(brain, "last")
    return brain, out, report


@pytest.mark.slow
def test_bundle_roundtrip_offline(exported, tiny_corpus, tmp_path, monkeypatch):
    brain, out, report = exported
    assert set(report) == {"bundle", "torchscript", "onnx"}
    assert "error" not in report["onnx"], report["onnx"]
    text = (out / "hyperparams.yaml").read_text()
    assert "paths:" not in text and "checkpointer" not in text

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = load_bundle(out, tmp_path / "savedir", "EncoderClassifier")
    wavs = torch.randn(3, 24000)
    ref = brain.encode(wavs)
    got = enc.encode_batch(wavs)
    assert float((ref - got.reshape(ref.shape)).abs().max()) < 1e-5

    sr = load_bundle(out, tmp_path / "savedir2", "SpeakerRecognition")
    import pandas as pd

    df = pd.read_csv(os.path.join(tiny_corpus, "train.csv"))
    a = os.path.join(tiny_corpus, df["File"].iloc[0])
    b = os.path.join(tiny_corpus, df["File"].iloc[-1])
    score, decision = sr.verify_files(a, b)
    import soundfile as sf

    ea = brain.encode(torch.from_numpy(sf.read(a, dtype="float32")[0])[None])
    eb = brain.encode(torch.from_numpy(sf.read(b, dtype="float32")[0])[None])
    cos = torch.nn.functional.cosine_similarity(ea, eb, dim=-1)
    assert abs(float(score) - float(cos)) < 1e-5


@pytest.mark.slow
def test_exported_files_match_brain_encode(exported):
    ort = pytest.importorskip("onnxruntime")
    brain, out, _ = exported
    ts = torch.jit.load(str(out / "embedding_pipeline.ts.pt"))
    sess = ort.InferenceSession(
        str(out / "embedding_pipeline.onnx"), providers=["CPUExecutionProvider"]
    )
    for x in WAVS:
        ref = brain.encode(x).numpy()
        with torch.no_grad():
            _close(ref, ts(x))
        _close(ref, sess.run(None, {"wavs": x.numpy()})[0])
        assert np.isfinite(ref).all()
