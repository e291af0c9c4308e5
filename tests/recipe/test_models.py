"""sslsv_sb.recipe.models: reading a run folder (errors name the flag and the file)."""

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.models import extract_encoder, load_run_hparams


def test_load_run_hparams_reads_the_saved_yaml(tmp_path):
    (tmp_path / "hyperparams.yaml").write_text(
        "output_folder: /moved/away\nsave_folder: !ref <output_folder>/save\n"
    )
    path, hp = load_run_hparams(tmp_path)
    assert path == str(tmp_path / "hyperparams.yaml")
    assert hp["save_folder"] == "/moved/away/save"
    _, hp = load_run_hparams(tmp_path, {"output_folder": str(tmp_path)})
    assert hp["save_folder"] == f"{tmp_path}/save"


def test_not_a_run_folder(tmp_path):
    with pytest.raises(SSLSVError, match=r"^--ssl_run: .*hyperparams.yaml: not found"):
        extract_encoder(tmp_path, tmp_path / "enc.ckpt", flag="--ssl_run")
    with pytest.raises(SSLSVError, match="is not a training run folder"):
        load_run_hparams(tmp_path / "nowhere")
    assert not (tmp_path / "enc.ckpt").exists()
