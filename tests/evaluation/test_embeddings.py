"""Evaluation extraction: batches, padding fidelity, parallel jobs, settings.

The fidelity test embeds the same files one at a time and in padded batches: the
ECAPA-TDNN of SpeechBrain pads its convolutions with ``reflect``, so a batch padded
with zeros changed the embeddings of its shorter utterances (cosine 0.91 here, 0.992
on the embedded corpus); mirrored padding keeps them.
"""

import os
import re

import numpy as np
import pytest
import soundfile as sf
import speechbrain
import torch
from ruamel.yaml import YAML
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.run_opts import RunOptions

import sslsv_sb.evaluation.embeddings as embeddings
from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.embeddings import (
    extract_embeddings,
    follow_train_precision,
    make_batches,
    pad_batch,
)
from sslsv_sb.evaluation.verification import EvalConfig
from sslsv_sb.models.encoders import ECAPAEncoder
from sslsv_sb.recipe.hparams import merged_text
from sslsv_sb.recipe.validate import check_override_types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HPARAMS = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams")
SR = 16000


class TinyECAPA:
    """Fbank -> per-utterance mean/variance norm -> ECAPA, as SSLBrain.embed."""

    def __init__(self):
        torch.manual_seed(0)
        self.fbank = Fbank(n_mels=24, n_fft=512)
        self.norm = InputNormalization(norm_type="sentence", std_norm=True)
        self.ecapa = ECAPAEncoder(24, lin_neurons=16, channels=[32, 32, 32, 32, 96])
        self.ecapa.eval()
        self.inference_mode = []

    def __call__(self, wavs, lengths):
        self.inference_mode.append(torch.is_inference_mode_enabled())
        return self.ecapa(self.norm(self.fbank(wavs), lengths), lengths)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: tiny convolutions, and 2 threads collapse on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """10 voiced-like files of 0.5-0.9 s and 3 files of exactly 0.6 s."""
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate(list(rng.uniform(0.5, 0.9, 10)) + [0.6] * 3):
        n = int(SR * seconds)
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 300) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        x = np.sin(2 * np.pi * f0 * t) * env + 0.05 * rng.standard_normal(n)
        path = str(folder / f"{i:02d}.wav")
        sf.write(path, (0.3 * x).astype(np.float32), SR)
        paths.append(path)
    return paths


def cosines(a, b):
    return (a * b).sum(1)  # rows are L2-normalised


def test_make_batches_respects_every_bound():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1000, 50000, 300)
    batches = make_batches(lengths, 120000, 8, 0.1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    for b in batches:
        longest, shortest = lengths[b].max(), lengths[b].min()
        assert lengths[b[0]] == longest
        assert len(b) <= 8
        assert len(b) == 1 or len(b) * longest <= 120000
        assert longest <= 1.1 * shortest
    # no bucketing: only the size bounds
    assert len(make_batches(lengths, 10**9, 300)) == 1
    # equal lengths only
    same = make_batches([5, 7, 5, 7, 6], 10**9, 10, 0.0)
    assert [sorted(b.tolist()) for b in same] == [[1, 3], [4], [0, 2]]


def test_pad_batch_mirrors_the_end():
    w, lens = pad_batch([np.arange(1.0, 6.0), np.arange(1.0, 3.0)])
    assert w.tolist() == [[1, 2, 3, 4, 5], [1, 2, 2, 1, 1]]
    assert lens.tolist() == pytest.approx([1.0, 0.4])
    z, _ = pad_batch([np.ones(3), np.ones(1)], mode="constant")
    assert z.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_padded_batches_give_the_embeddings_of_one_at_a_time(wavs):
    encode = TinyECAPA()
    one = extract_embeddings(encode, wavs, max_batch=1)
    assert encode.inference_mode and all(encode.inference_mode)
    batched = extract_embeddings(
        encode, wavs, max_batch=16, max_batch_seconds=100, bucket_ratio=None
    )
    assert cosines(one, batched).min() > 0.999
    # equal lengths only: batches without padding give the same numbers
    exact = extract_embeddings(
        encode, wavs, max_batch=16, max_batch_seconds=100, bucket_ratio=0.0
    )
    np.testing.assert_allclose(exact, one, atol=1e-5)
    # zero padding (the old extraction) changes the padded utterances' embeddings
    zeros = extract_embeddings(
        encode,
        wavs,
        max_batch=16,
        max_batch_seconds=100,
        bucket_ratio=None,
        pad_mode="constant",
    )
    assert cosines(one, zeros).min() < 0.99


def test_default_batches_and_jobs_match_one_at_a_time(wavs):
    encode = TinyECAPA()
    one = extract_embeddings(encode, wavs, max_batch=1)
    default = extract_embeddings(encode, wavs)
    parallel = extract_embeddings(encode, wavs, jobs=2, max_batch=2)
    assert cosines(one, default).min() > 0.999
    assert cosines(one, parallel).min() > 0.999
    np.testing.assert_allclose(
        parallel, extract_embeddings(encode, wavs, max_batch=2), atol=1e-5
    )


def test_an_error_in_a_job_is_one_clean_line(wavs, monkeypatch):
    real = embeddings.read_full

    def read_full(path, sample_rate=16000):
        if path == wavs[5]:
            raise SSLSVError(f"{path}: cannot read audio (broken)")
        return real(path, sample_rate)

    monkeypatch.setattr(embeddings, "read_full", read_full)  # inherited by fork
    with pytest.raises(SSLSVError) as err:
        extract_embeddings(TinyECAPA(), wavs, jobs=2, max_batch=1)
    assert str(err.value) == f"{wavs[5]}: cannot read audio (broken)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "eval_batch_size: must be >= 1"),
        ({"max_batch_seconds": 0}, "eval_max_batch_seconds: must be > 0"),
        ({"bucket_ratio": -0.5}, "eval_bucket_ratio: must be >= 0"),
        ({"jobs": -1}, "eval_jobs: must be >= 0"),
    ],
)
def test_bad_extraction_settings(wavs, kwargs, message):
    with pytest.raises(SSLSVError, match=message):
        extract_embeddings(TinyECAPA(), wavs[:2], **kwargs)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eval_batch_size", 0, "eval_batch_size: must be an integer >= 1, got 0"),
        ("eval_jobs", "two", "eval_jobs: must be an integer >= 0, got 'two'"),
        ("eval_max_batch_seconds", -1.0, "eval_max_batch_seconds: must be a number"),
        ("eval_bucket_ratio", -0.1, r"eval_bucket_ratio: must be a number >= 0 or"),
        ("eval_whiten_n_components", "x", "eval_whiten_n_components: must be an int"),
    ],
)
def test_eval_config_names_the_bad_key(key, value, message):
    with pytest.raises(SSLSVError, match=message):
        EvalConfig.from_hparams({"trial_lists": ["t.txt"], key: value})


def test_follow_train_precision(monkeypatch):
    def opts(**given):
        return RunOptions.from_dictionary({"device": "cpu", **given})

    monkeypatch.setattr(embeddings, "native_bf16", lambda: True)
    bf16 = follow_train_precision(opts(precision="bf16"))
    assert bf16.eval_precision == "bf16" and "eval_precision" in bf16.overridden_args
    explicit = follow_train_precision(opts(precision="bf16", eval_precision="fp32"))
    assert explicit.eval_precision == "fp32"
    assert follow_train_precision(opts(precision="fp32")).eval_precision == "fp32"
    monkeypatch.setattr(embeddings, "native_bf16", lambda: False)  # emulated bf16
    assert follow_train_precision(opts(precision="bf16")).eval_precision == "fp32"
    # what load_hparams returns for the command line
    _, run_opts, _ = speechbrain.parse_arguments(["x.yaml", "--precision=bf16"])
    assert follow_train_precision(run_opts).eval_precision == "fp32"
    monkeypatch.setattr(embeddings, "native_bf16", lambda: True)
    assert follow_train_precision(run_opts).eval_precision == "bf16"


def _defaults():
    with open(os.path.join(HPARAMS, "defaults.yaml"), encoding="utf-8") as f:
        return YAML().load(f)  # round-trip: keeps the !tags as tagged values


def test_defaults_yaml_lists_every_eval_setting_with_its_default():
    doc = _defaults()
    defaults = EvalConfig()
    for name in EvalConfig.__dataclass_fields__:
        if name in EvalConfig._PLAIN:
            continue
        key = f"eval_{name}"
        assert key in doc, f"defaults.yaml lacks {key}"
        assert doc[key] == getattr(defaults, name), key


def test_every_documented_eval_key_is_overridable():
    text = ""
    for folder, _, files in os.walk(os.path.join(ROOT, "docs")):
        for name in files:
            if name.endswith(".md"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    text += f.read()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text += f.read()
    documented = set(re.findall(r"`-*(eval_[a-z0-9_]+)", text))
    not_yaml = {"eval_precision", "eval_folder"}  # SpeechBrain / evaluate.py flags
    assert {"eval_whiten_n_components", "eval_batch_size"} <= documented
    missing = sorted(documented - set(_defaults()) - not_yaml)
    assert not missing, f"documented but not in defaults.yaml: {missing}"
    merged = merged_text(os.path.join(HPARAMS, "simclr_ecapa.yaml"))
    overrides = {k: v for k, v in _defaults().items() if k in documented}
    overrides.update(
        eval_whiten_n_components=32, eval_batch_size=4, eval_bucket_ratio=0.05
    )
    check_override_types(merged, overrides)  # raises on an unknown / mistyped key
    cfg = EvalConfig.from_hparams({"trial_lists": ["t.txt"], **overrides})
    assert (cfg.whiten_n_components, cfg.batch_size, cfg.bucket_ratio) == (32, 4, 0.05)
