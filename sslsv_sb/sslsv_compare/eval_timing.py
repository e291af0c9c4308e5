"""Time sslsv's own verification evaluation, inside sslsv's virtual environment.

Executed by sslsv's Python (``PYTHONPATH`` = the sslsv folder), like
:mod:`~sslsv_sb.sslsv_compare.runner`, whose stand-ins it reuses; it imports only the
standard library, numpy, torch and sslsv. It builds sslsv's ECAPA-TDNN (seeded, not
trained: the timing does not depend on the weights) with its own front-end (40-mel
``MelSpectrogram`` + ``InstanceNorm1d``) and runs sslsv's ``CosineSVEvaluation`` on a
trial list with its test protocol (``frame_length: null``: full utterances, one at a
time), which embeds every distinct file of the list once and scores every trial.
Only ``evaluate()`` is timed (model construction and imports are not).

Output: one JSON line on stdout, ``{"rounds": [{"seconds", "n_files",
"utt_per_s", "cpu_seconds", "cpu_utt_per_s", "eer"}, ...], "threads", "torch",
"n_params_encoder"}``.

Usage (normally through ``tools/eval_speed.py``)::

    PYTHONPATH=/path/to/sslsv python eval_timing.py --data_folder DATA \\
        --trials trials.txt --channels 256 --emb_dim 192 --n_mels 40 --threads 2 \\
        --warmup 8
"""

import argparse
import importlib.util
import json
import os
import pathlib
import resource
import sys
import tempfile
import time
import types


def _runner():
    """The comparison runner module (same folder), for its stand-ins."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
    spec = importlib.util.spec_from_file_location("sslsv_compare_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warmup_lines(lines, n):
    """The first ``n`` trial lines, half targets and half non-targets (>= 1 each).

    Example
    -------
    >>> warmup_lines(["1 a b\\n", "1 a c\\n", "1 b c\\n", "0 a d\\n"], 2)
    ['1 a b\\n', '0 a d\\n']
    """
    half = max(1, n // 2)
    targets = [ln for ln in lines if ln.split()[:1] == ["1"]][:half]
    others = [ln for ln in lines if ln.split()[:1] == ["0"]][: max(1, n - half)]
    return targets + others


def _cpu_seconds():
    """User + system CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_folder", required=True, help="sslsv base_path")
    parser.add_argument("--trials", required=True, help="trial list in data_folder")
    parser.add_argument("--channels", type=int, default=256, help="ECAPA C")
    parser.add_argument("--emb_dim", type=int, default=192, help="encoder_dim")
    parser.add_argument("--n_mels", type=int, default=40, help="mel_n_mels")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rounds", type=int, default=1, help="timed evaluations")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed evaluation of the first N trials"
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Time sslsv's evaluation (see the module docstring); returns the payload."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    _runner().install_stand_ins()

    import torch
    from sslsv.encoders.ECAPATDNN import ECAPATDNN, ECAPATDNNConfig
    from sslsv.evaluations.CosineSVEvaluation import (
        CosineSVEvaluation,
        CosineSVEvaluationTaskConfig,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c = args.channels
    encoder = ECAPATDNN(
        ECAPATDNNConfig(
            encoder_dim=args.emb_dim,
            mel_n_mels=args.n_mels,
            channels=[c, c, c, c, 3 * c],
        )
    ).eval()
    rounds = []
    with tempfile.TemporaryDirectory() as model_path:
        # The fields of sslsv's Config that the evaluation reads.
        config = types.SimpleNamespace(
            dataset=types.SimpleNamespace(
                base_path=pathlib.Path(args.data_folder),
                num_workers=0,
                pin_memory=False,
            ),
            model_path=pathlib.Path(model_path),
        )

        def evaluation_of(trials):
            task = CosineSVEvaluationTaskConfig(frame_length=None, trials=[trials])
            task.__type__ = "sv_cosine"
            return CosineSVEvaluation(
                encoder, config, task, torch.device("cpu"), False, False
            )

        if args.warmup:
            # An absolute trial list path: sslsv joins it to base_path unchanged.
            lines = pathlib.Path(args.data_folder, args.trials).read_text()
            warm = pathlib.Path(model_path, "warmup_trials.txt")
            warm.write_text("".join(warmup_lines(lines.splitlines(True), args.warmup)))
            evaluation_of(str(warm)).evaluate()
        for _ in range(args.rounds):
            evaluation = evaluation_of(args.trials)
            start, cpu = time.perf_counter(), _cpu_seconds()
            metrics = evaluation.evaluate()
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu
            n_files = len({**evaluation.enrol_embeddings, **evaluation.test_embeddings})
            rounds.append(
                {
                    "seconds": seconds,
                    "n_files": n_files,
                    "utt_per_s": n_files / seconds,
                    "cpu_seconds": cpu,
                    "cpu_utt_per_s": n_files / cpu,
                    "eer": float(metrics[f"{args.trials}/eer"]),
                }
            )
    payload = {
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "n_params_encoder": sum(p.numel() for p in encoder.parameters()),
    }
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    main()
