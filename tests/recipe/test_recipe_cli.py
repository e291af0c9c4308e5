"""sslsv_sb.recipe.cli: one run_cli (exit status 2 on user errors), flag splitting."""

import sys

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.cli import pop_keys, run_cli, split_flags


def _raise(exc):
    def main(argv):
        raise exc

    return main


def test_user_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(_raise(SSLSVError("train.csv:3: audio file not found")), [])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: train.csv:3: audio file not found\n"


def test_interrupt_exit_130_and_other_errors_propagate(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(_raise(KeyboardInterrupt()), [])
    assert info.value.code == 130 and "re-run" in capsys.readouterr().err
    with pytest.raises(ValueError):  # a bug keeps its traceback
        run_cli(_raise(ValueError("bug")), [])


def test_return_values_and_argv():
    seen = []
    assert run_cli(lambda argv: seen.append(argv) or {"eer": 1.0}, ["a"]) == {
        "eer": 1.0
    }
    assert seen == [["a"]]
    assert run_cli(lambda argv: None, []) is None
    assert run_cli(lambda argv: True, []) is True  # a bool is not an exit status
    with pytest.raises(SystemExit) as info:
        run_cli(lambda argv: 1, [])  # tools returning their exit status
    assert info.value.code == 1


def test_default_argv_is_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "x.yaml", "--lr=1"])
    assert run_cli(lambda argv: argv, None) == ["x.yaml", "--lr=1"]


def test_split_flags_forms_and_errors():
    flags = {"probes": ["linear"], "n_crops": 1, "no_plots": False, "name": None}
    opts, rest = split_flags(
        ["y.yaml", "--probes=[mlp,linear]", "--n_crops", "3", "--lr=1", "--no_plots"],
        flags,
    )
    assert opts == {
        "probes": ["mlp", "linear"],
        "n_crops": 3,
        "no_plots": True,
        "name": None,
    }
    assert rest == ["y.yaml", "--lr=1"]
    assert split_flags(["--no_plots=false"], flags)[0]["no_plots"] is False
    with pytest.raises(SSLSVError, match="--name: missing value"):
        split_flags(["y.yaml", "--name"], flags)
    with pytest.raises(SSLSVError, match="--probes: cannot parse"):
        split_flags(["--probes=[a"], flags)


def test_pop_keys_both_forms():
    found, kept = pop_keys(
        ["y.yaml", "--output_folder", "o", "--lr=1", "--data_folder=d"],
        ["output_folder", "data_folder"],
    )
    assert found == {"output_folder": "o", "data_folder": "d"}
    assert kept == ["y.yaml", "--lr=1"]


def test_console_handler_splits_by_level(capsys):
    import io
    import logging

    from sslsv_sb.recipe.cli import ConsoleHandler

    out = io.StringIO()
    log = logging.getLogger("sslsv_sb.test_console")
    log.propagate, log.handlers = False, [ConsoleHandler(out)]
    log.setLevel(logging.INFO)
    log.info("progress")
    log.warning("dropped 3 files")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("Exception:")
    err = capsys.readouterr().err
    assert out.getvalue() == "progress\n"
    assert err.startswith("dropped 3 files\nException:\nTraceback")


def test_irrelevant_speechbrain_warning_is_dropped(caplog):
    import logging

    import sslsv_sb.recipe.cli  # noqa: F401  (installs the filter)

    log = logging.getLogger("speechbrain.utils.train_logger")
    log.warning("torchvision is not available - cannot save figures")
    log.warning("another train_logger warning")
    assert caplog.messages == ["another train_logger warning"]
