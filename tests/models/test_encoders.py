"""Tests for the TDNN, ResNet34, SimpleAudioCNN and SincNet encoders.

Inputs are short (1 s of audio / 101 frames, batch 2) to stay fast on a shared CPU.
"""

import pytest
import torch

from sslsv_sb.models.resnet34 import ResNet34
from sslsv_sb.models.simple_audio_cnn import SimpleAudioCNN
from sslsv_sb.models.sincnet import SincEncoder, SincNetFrontEnd
from sslsv_sb.models.tdnn import (
    TDNN,
    MaskedStatisticsPooling,
    abs_lengths,
    conv_out_lengths,
    length_mask,
)

torch.set_num_threads(1)

N_FRAMES = 101  # 1 s of 10 ms frames
N_SAMPLES = 16000  # 1 s at 16 kHz

# name -> (constructor, input shape without batch, expected output shape w/o batch)
CASES = {
    "tdnn": (lambda: TDNN(input_size=40), (N_FRAMES, 40), (512,)),
    "tdnn_frames": (
        lambda: TDNN(input_size=40, pooling=False),
        (N_FRAMES, 40),
        (1500, N_FRAMES - 14),
    ),
    "resnet_sap": (lambda: ResNet34(input_size=40), (N_FRAMES, 40), (512,)),
    "resnet_stats": (
        lambda: ResNet34(input_size=80, pooling="stats"),
        (N_FRAMES, 80),
        (512,),
    ),
    "resnet_frames": (
        lambda: ResNet34(input_size=40, pooling=None),
        (N_FRAMES, 40),
        (512, 26),
    ),
    "sacnn_frames": (lambda: SimpleAudioCNN(), (N_SAMPLES,), (512, 100)),
    "sacnn_pooled": (lambda: SimpleAudioCNN(frame_level=False), (N_SAMPLES,), (512,)),
    "sinc": (lambda: SincEncoder(), (N_SAMPLES,), (512,)),
    "sinc_frames": (lambda: SincEncoder(frame_level=True), (N_SAMPLES,), (512, 581)),
}

# Trainable parameters of the default configs. sslsv's published counts
# (docs/encoders.md): TDNN 4,516,244, ResNet34 SAP 40-mel 1,437,078, ResNet34
# frame-level 1,682,582, SimpleAudioCNN 5,253,120 -- all matched exactly.
PARAMS = {
    "tdnn": 4_516_244,
    "tdnn_frames": 2_716_052,
    "resnet_sap": 1_437_078,
    "resnet_stats": 2_665_622,
    "resnet_frames": 1_682_582,
    "sacnn_frames": 5_253_120,
    "sacnn_pooled": 5_253_120,
    "sinc": 265_792,
    "sinc_frames": 200_256,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: ctor() for name, (ctor, _, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_shape_out_dim_and_params(models, name):
    model = models[name].eval()
    _, in_shape, out_shape = CASES[name]
    with torch.no_grad():
        y = model(torch.randn(2, *in_shape))
    assert y.shape == (2, *out_shape)
    assert model.out_dim == out_shape[0]
    assert n_params(model) == PARAMS[name]


@pytest.mark.parametrize("name", list(CASES))
def test_length_aware(models, name):
    """Zero-padding + relative length == the unpadded input (eval mode)."""
    model = models[name].eval()
    _, in_shape, _ = CASES[name]
    torch.manual_seed(1)
    short_len = in_shape[0] * 3 // 4
    short = torch.randn(1, short_len, *in_shape[1:])
    padded = torch.zeros(2, *in_shape)
    padded[0, :short_len] = short[0]
    padded[1] = torch.randn(*in_shape)
    lengths = torch.tensor([short_len / in_shape[0], 1.0])
    with torch.no_grad():
        ref = model(short)
        out = model(padded, lengths)[:1]
    if ref.dim() == 3:  # frame-level: valid frames equal, padded frames zeroed
        assert torch.all(out[..., ref.shape[-1] :] == 0)
        out = out[..., : ref.shape[-1]]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["tdnn", "resnet_sap", "sacnn_frames", "sinc"])
def test_lengths_none_equals_full_lengths(models, name):
    model = models[name].eval()
    _, in_shape, _ = CASES[name]
    x = torch.randn(2, *in_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, torch.ones(2)))


@pytest.mark.parametrize("name", ["tdnn", "resnet_stats", "sacnn_pooled", "sinc"])
def test_gradient_flows(models, name):
    model = models[name].train()
    _, in_shape, _ = CASES[name]
    model.zero_grad()
    y = model(torch.randn(2, *in_shape), torch.tensor([0.8, 1.0]))
    y.pow(2).mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params)
    assert all(torch.isfinite(p.grad).all() for p in params)
    # The first layer receives gradient.
    first = next(iter(model.parameters()))
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_autocast(models, name):
    model = models[name].eval()
    _, in_shape, out_shape = CASES[name]
    x = torch.randn(2, *in_shape)
    with torch.no_grad():
        ref = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, torch.tensor([0.9, 1.0]))
    assert y.shape == (2, *out_shape)
    assert torch.isfinite(y.float()).all()
    # bf16 keeps about 3 significant digits: the full-length item stays close.
    cos = torch.nn.functional.cosine_similarity(
        y[1].float().flatten(), ref[1].flatten(), dim=0
    )
    assert cos > 0.98


def test_simple_audio_cnn_accepts_3d_input(models):
    model = models["sacnn_frames"].eval()
    x = torch.randn(2, 3200)
    with torch.no_grad():
        torch.testing.assert_close(model(x.unsqueeze(-1)), model(x))
    with pytest.raises(ValueError):
        model(torch.randn(2, 3200, 2))


def test_resnet34_variants():
    wide = ResNet34(input_size=40, base_channels=32)
    assert n_params(wide) == 5_602_988
    assert ResNet34(pooling="none").pooling is None
    with pytest.raises(ValueError):
        ResNet34(pooling="max")


def test_resnet34_convolutions_use_he_fan_out_init():
    """sslsv's (and voxceleb_trainer's) init: std sqrt(2 / fan_out), not PyTorch's
    default (1 / sqrt(3 fan_in), 2.4x smaller for a square 3x3 conv)."""
    torch.manual_seed(0)
    model = ResNet34(input_size=40)
    for conv in (model.stem[0], model.blocks[-1].conv2, model.blocks[3].shortcut[0]):
        w = conv.weight
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        assert w.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    bn = model.blocks[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_tdnn_too_short_raises(models):
    with pytest.raises(ValueError):
        models["tdnn"](torch.randn(2, 14, 40))


def test_sinc_frontend_lengths():
    fe = SincNetFrontEnd()
    n = torch.tensor([16000, 8000])
    assert fe.out_lengths(n).tolist() == [581, 285]
    assert fe(torch.randn(1, 8000)).shape == (1, 128, 285)


def test_length_helpers():
    n = abs_lengths(torch.tensor([0.5, 1.0]), 10)
    assert n.tolist() == [5, 10]
    assert conv_out_lengths(torch.tensor([16000]), 10, 5, 3).tolist() == [3200]
    assert length_mask(torch.tensor([2]), 4).tolist() == [[True, True, False, False]]
    pool = MaskedStatisticsPooling()
    x = torch.tensor([[[1.0, 3.0, 100.0]]])
    out = pool(x, torch.tensor([2]))
    torch.testing.assert_close(out, torch.tensor([[2.0, 1.0]]))


def test_feature_norm_sentence_is_the_encoder_blocks_normalisation():
    from speechbrain.processing.features import InputNormalization

    from sslsv_sb.models.encoders import FeatureNorm

    torch.manual_seed(0)
    x = torch.randn(3, 40, 8) * 4 + 2
    lengths = torch.tensor([1.0, 0.5, 0.75])  # padded frames stay out of the stats
    ref = InputNormalization(norm_type="sentence", std_norm=True)(x, lengths)
    assert torch.allclose(FeatureNorm("sentence")(x, lengths), ref)
    # "none" keeps the utterance's spectral envelope (what "sentence" removes)
    none = FeatureNorm("none")(x, lengths)
    assert torch.equal(none, x) and not torch.allclose(ref, x)


@pytest.mark.parametrize("autocast", [False, True])
def test_sliced_reflect_padding_equals_speechbrains(autocast):
    """ECAPAEncoder's sliced padding gives SpeechBrain's outputs and gradients."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    from sslsv_sb.models.encoders import ECAPAEncoder, SlicedReflectConv1d

    torch.manual_seed(0)
    kw = {"lin_neurons": 16, "channels": [32, 32, 32, 32, 96]}
    ours, ref = ECAPAEncoder(20, **kw), ECAPA_TDNN(20, **kw)
    ref.load_state_dict(ours.state_dict())  # same names, same weights
    convs = [m for m in ours.modules() if isinstance(m, SlicedReflectConv1d)]
    padded = [m for m in convs if m.kernel_size > 1]
    assert len(convs) > len(padded) >= 4  # dilated 3-tap and 1x1 convolutions
    x = torch.randn(3, 37, 20)
    lens = torch.tensor([1.0, 0.7, 0.5])
    outs, grads = [], []
    for model in (ours, ref):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = model.train()(xi, lens).reshape(3, -1)
        (y.float() * torch.arange(16.0)).sum().backward()
        outs.append(y.detach())
        grads.append((xi.grad, next(model.parameters()).grad))  # first conv: k=5
        model.zero_grad()
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_sliced_reflect_padding_keeps_the_too_short_error():
    from sslsv_sb.models.encoders import ECAPAEncoder

    enc = ECAPAEncoder(20, lin_neurons=16, channels=[32, 32, 32, 32, 96])
    with pytest.raises(RuntimeError, match="[Pp]adding size"):
        enc(torch.randn(1, 2, 20))
