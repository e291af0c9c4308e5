"""sslsv_sb.recipe.validate: override types against the merged yaml, init_from."""

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.validate import _check_init_from, check_override_types

YAML = """\
batch_size: 256
lr: 0.001
tensorboard: False
strategy: reverb+noise
channels: [512, 1536]
snr: [0.0, 15.0]
corpus: {}
patience: null
lr_schedule: null
output_folder: !ref results/<seed>
encoder: !new:torch.nn.Identity
"""


@pytest.mark.parametrize(
    "override",
    [
        "batch_size: 8\nlr: 1\ntensorboard: True",
        "strategy: 3\nchannels: [8, 24]\nsnr: [0, 1.5]",
        "corpus: {n_speakers: 4}\npatience: 3",
        "patience: null\nstrategy: null",
        "lr_schedule: !name:sslsv_sb.schedules.cosine_warmup_lr",
        "output_folder: out\nencoder: 3",  # tagged in the yaml: anything
        {"batch_size": 8},
        "",
    ],
)
def test_accepted(override):
    check_override_types(YAML, override, "m.yaml")


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_size: abc", r"^--batch_size=abc: expected an integer .*got text$"),
        ("batch_size: 8.0", "expected an integer"),
        ("batch_size: True", "got a bool"),
        ("batch_size: null", r"expected an integer \(the yaml .*got null$"),
        ("lr: [1]", "expected a number"),
        ("tensorboard: 0", "expected True or False"),
        ("strategy: [a]", "expected a scalar"),
        ("channels: 8", "expected a list"),
        ("channels: [8, x]", r"expected a list of integers .*got x \(text\)"),
        ("snr: [0, low]", "expected a list of numbers"),
        ("corpus: [1]", "expected a mapping"),
        ("patience: 2.5", "expected an integer or null"),
        ({"lr": "abc"}, "expected a number"),
        ("batchsize: 4", r"m.yaml: unknown .* --batchsize .*did you mean --batch_size"),
        ("zzz: 4", r"--zzz \(not a key of the yaml or the files it extends\)$"),
        ("lr: 1\nlr: 2", r"^--lr is given twice on the command line$"),
    ],
)
def test_refused(override, message):
    with pytest.raises(SSLSVError, match=message):
        check_override_types(YAML, override, "m.yaml")


def test_init_from(tmp_path):
    _check_init_from({"init_from": None})
    with pytest.raises(SSLSVError, match="init_from: run folder not found"):
        _check_init_from({"init_from": str(tmp_path / "nope")})
    (tmp_path / "save" / "CKPT+x").mkdir(parents=True)
    with pytest.raises(SSLSVError, match="init_from: no checkpoint under"):
        _check_init_from({"init_from": str(tmp_path)})
    (tmp_path / "save" / "CKPT+x" / "CKPT.yaml").write_text("{}\n")
    _check_init_from({"init_from": str(tmp_path)})

    class Resumed:  # this run has checkpoints: init_from is not used
        def find_checkpoints(self):
            return ["CKPT+1"]

    _check_init_from({"init_from": str(tmp_path / "gone"), "checkpointer": Resumed()})
