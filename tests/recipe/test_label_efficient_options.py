"""sslsv_sb.recipe.label_efficient: options, per-run keys, folder names."""

import pytest

import sslsv_sb.recipe.label_efficient as le
from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.cli import pop_keys


def test_options_and_helpers():
    opts, rest = le.parse_options(
        [
            "hparams/supervised_ecapa.yaml",
            "--output_folder=x",
            "--fractions=[0.5,0.02,0.5]",
            "--modes=scratch",
            "--batch_size=8",
        ]
    )
    assert opts["fractions"] == [0.02, 0.5] and opts["modes"] == ["scratch"]
    assert rest == [
        "hparams/supervised_ecapa.yaml",
        "--output_folder=x",
        "--batch_size=8",
    ]
    found, kept = pop_keys(["y.yaml", "--n_classes", "3", "--lr=1"], ["n_classes"])
    assert found == {"n_classes": "3"} and kept == ["y.yaml", "--lr=1"]
    assert le.pct_name(0.05) == "5" and le.pct_name(0.005) == "0.5"


@pytest.mark.parametrize(
    "args,match",
    [
        (["y.yaml", "--output_folder=x", "--fractions=[0,0.5]"], "fraction"),
        (["y.yaml", "--output_folder=x", "--modes=[linear]"], "modes"),
        (["y.yaml", "--output_folder=x", "--modes=[finetune]"], "SSL model"),
        (["y.yaml", "--modes=[scratch]"], "output_folder"),
        (["y.yaml", "--output_folder=x", "--fraction_unit=files"], "fraction_unit"),
    ],
)
def test_option_errors(args, match):
    with pytest.raises(SSLSVError, match=match):
        le.parse_options(args)
