#!/usr/bin/env python3
"""Language recognition with a self-supervised encoder: pre-train, probe, verify.

One command runs the language-ID family on VoxLingua107 or on the embedded corpus
in multilingual mode (offline)::

    python recipes/VoxLingua/SSL/language.py hparams/simclr_ecapa.yaml \
        --output_folder=results/voxlingua/simclr_ecapa [--data_folder=DATA] \
        [--stages=[pretrain,probe,verify,finetune]] [--probes=[linear,mlp]] \
        [--finetune_lr_factor=0.1] [--channels=[...] --emb_dim=... ...]

Stages (each skipped when its output exists, so the command resumes):

1. ``pretrain``: ``train.py`` with the SSL yaml on the unlabelled train list;
2. ``probe``: ``downstream.py`` linear / MLP probes of the frozen embeddings for
   ``language_key`` (accuracy, macro / weighted F1), trained on
   ``language_train_list`` and tested on ``language_test_list`` (embedded corpus:
   ``test.csv``, held-out speakers) -> ``<output_folder>/downstream.json``;
3. ``verify``: language-verification trials (same / different language, different
   speakers, exact counts; :mod:`sslsv_sb.data.language_trials`) scored by
   ``evaluate.py`` (cosine EER / minDCF) -> ``<output_folder>/language_verification/``;
4. ``finetune`` (optional): ``supervised_ecapa.yaml`` (AAM, ``label_key: Language``)
   initialised from the SSL encoder with encoder LR x ``finetune_lr_factor``, in
   ``<output_folder>/finetune``, then probed and verified like the SSL model.

Without ``--data_folder`` the embedded corpus is generated with the yaml's
``corpus:`` languages in ``<embedded data folder>/<preset>-<languages>`` (its own
folder, so it never clashes with the English corpus) and the yaml's ``embedded:``
values apply. Results: ``<output_folder>/language.json`` and ``language.md``.

Authors: the sslsv-sb developers.
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VOX = os.path.join(os.path.dirname(os.path.dirname(HERE)), "VoxCeleb", "SSL")
if VOX not in sys.path:
    sys.path.insert(0, VOX)

from evaluate import split_eval_args  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from label_efficient import extract_ssl_encoder, pop_keys  # noqa: E402

from sslsv_sb.data.language_trials import (  # noqa: E402
    make_language_trials,
    read_language_rows,
    split_speakers,
    write_trials,
)
from sslsv_sb.data.lists import resolve  # noqa: E402
from sslsv_sb.errors import SSLSVError, run_cli  # noqa: E402

STAGES = ("pretrain", "probe", "verify", "finetune")
FLAGS = {
    "stages": ["pretrain", "probe", "verify"],
    "probes": ["linear", "mlp"],
    "finetune_lr_factor": 0.1,
    "finetune_yaml": os.path.join(HERE, "hparams", "supervised_ecapa.yaml"),
}


def _yaml_path(path):
    if os.path.isfile(path):
        return os.path.abspath(path)
    alt = os.path.join(HERE, path)
    if os.path.isfile(alt):
        return alt
    raise SSLSVError(f"hparams file not found: {path}")


def _top_keys(path):
    with open(path, encoding="utf-8") as f:
        return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", f.read(), flags=re.M))


def _override_keys(args):
    return {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}


def resolve_data(yaml_path, overrides):
    """Data folder and the ``embedded:`` values to pass (embedded corpus if needed).

    Arguments
    ---------
    yaml_path : str
    overrides : list of str
        ``--key=value`` arguments (may contain ``--data_folder``).

    Returns
    -------
    (str, list of str, dict)
        Data folder, extra ``--key=value`` arguments, plain yaml values (the
        ``language_*`` keys after the embedded values).
    """
    given, _ = pop_keys(overrides, ["data_folder", "corpus_preset"])
    lines = [
        f"{a[2:].split('=', 1)[0]}: {a.split('=', 1)[1]}"
        for a in overrides
        if a.startswith("--")
        and "=" in a
        and a[2:].split("=", 1)[0] in _top_keys(yaml_path)
    ]
    try:
        with open(yaml_path, encoding="utf-8") as f:
            raw = load_hyperpyyaml(f, "\n".join(lines))
    except Exception as err:  # noqa: BLE001 - any yaml / override problem
        raise SSLSVError(f"{yaml_path}: cannot load with the overrides: {err}") from err
    keys = ("language_key", "language_train_list", "language_test_list")
    values = {k: raw.get(k) for k in keys}
    values.update(
        {k: raw.get(k) for k in ("language_n_target", "language_n_nontarget")}
    )
    values["language_trials_seed"] = raw.get("language_trials_seed", 0)
    values["seed"] = raw.get("seed", 0)
    if given.get("data_folder") and given["data_folder"] != "null":
        return os.path.abspath(given["data_folder"]), [], values
    from sslsv_sb.data.corpus import default_data_folder, ensure_corpus

    preset = given.get("corpus_preset") or raw.get("corpus_preset", "demo")
    corpus = dict(raw.get("corpus") or {})
    langs = corpus.get("languages") or []
    name = f"{preset}-{'-'.join(langs)}" if langs else preset
    folder = str(
        ensure_corpus(os.path.join(default_data_folder(), name), preset, **corpus)
    )
    user = _override_keys(overrides)
    extra = []
    for k, v in (raw.get("embedded") or {}).items():
        if k not in user:
            extra.append(f"--{k}={json.dumps(v)}")
            if k in values:
                values[k] = v
    return folder, extra, values


def run_script(script, args, log_path):
    """Run a recipe script as a subprocess (output appended to ``log_path``)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, os.path.join(VOX, script), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = f.read()[-2000:]
        raise SSLSVError(
            f"{script} failed (exit {proc.returncode}); see {log_path}:\n{tail}"
        )


def build_trials(values, data_folder, out):
    """Write the language-verification trial list; returns (path, counts)."""
    key = values["language_key"] or "Language"
    test = values.get("language_test_list")
    if test:
        rows = read_language_rows(resolve(test, data_folder), key)
    else:
        rows = read_language_rows(
            resolve(values["language_train_list"], data_folder), key
        )
        _, rows = split_speakers(rows, 0.25, values["seed"])
    trials = make_language_trials(
        rows,
        int(values["language_n_target"]),
        int(values["language_n_nontarget"]),
        seed=int(values["language_trials_seed"]),
    )
    path = os.path.join(out, "language_trials.txt")
    write_trials(trials, path)
    n_t = sum(t[0] for t in trials)
    return path, {"target": n_t, "nontarget": len(trials) - n_t}


def probe_and_verify(yaml_path, run, args, values, trials_path, stages, probes):
    """Probe and verify one run folder; returns its results dict."""
    res = {}
    if "probe" in stages:
        task_args = [
            f"--task_csv={values['language_train_list']}",
            f"--task_key={values['language_key']}",
            f"--probes={json.dumps(list(probes))}",
        ]
        if values.get("language_test_list"):
            task_args.append(f"--task_test_csv={values['language_test_list']}")
        path = os.path.join(run, "downstream.json")
        if not os.path.isfile(path):
            run_script(
                "downstream.py",
                [yaml_path, f"--output_folder={run}", *args, *task_args],
                os.path.join(run, "language_probe.log"),
            )
        with open(path, encoding="utf-8") as f:
            tasks = json.load(f)["tasks"]
        res["probe"] = next(
            v for k, v in tasks.items() if k.endswith(":" + values["language_key"])
        )
    if "verify" in stages:
        folder = os.path.join(run, "language_verification")
        path = os.path.join(folder, "verification.json")
        if not os.path.isfile(path):
            run_script(
                "evaluate.py",
                [
                    yaml_path,
                    f"--output_folder={run}",
                    *[a for a in args if not a.startswith("--trial_lists")],
                    f"--trial_lists=[{trials_path}]",
                    f"--eval_folder={folder}",
                    "--no_plots",
                ],
                os.path.join(run, "language_verify.log"),
            )
        with open(path, encoding="utf-8") as f:
            lists = json.load(f)["lists"]
        m = lists["language_trials"]["cosine"]
        res["verification"] = {"eer": m["eer"], "mindcf_0.01": m.get("mindcf_0.01")}
    return res


def format_markdown(payload):
    """Markdown summary of ``language.json``."""
    lines = [
        "# Language recognition",
        "",
        f"{payload['n_languages']} languages (chance accuracy "
        f"{100 * payload['chance_accuracy']:.1f} %), language trials: "
        f"{payload['trials']['target']} same / {payload['trials']['nontarget']} "
        "different language (held-out speakers, never the same speaker).",
        "",
        "| model | probe | accuracy (%) | F1 macro | language-verification EER (%) |",
        "|---|---|---|---|---|",
    ]
    for model in ("ssl", "finetune"):
        r = payload.get(model)
        if not r:
            continue
        eer = r.get("verification", {}).get("eer")
        eer = "-" if eer is None else f"{eer:.2f}"
        probes = [k for k in r.get("probe", {}) if isinstance(r["probe"][k], dict)]
        for p in probes or ["-"]:
            m = r.get("probe", {}).get(p, {})
            acc = f"{100 * m['accuracy']:.1f}" if m else "-"
            f1 = f"{m['f1_macro']:.3f}" if m else "-"
            lines.append(f"| {model} | {p} | {acc} | {f1} | {eer} |")
    return "\n".join(lines) + "\n"


def main(argv):
    """Run the requested stages; returns the ``language.json`` payload."""
    opts, rest = split_eval_args(argv, FLAGS)
    stages = opts["stages"]
    stages = [stages] if isinstance(stages, str) else list(stages)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SSLSVError(f"--stages: unknown {bad}; choose from {list(STAGES)}")
    if not rest or rest[0].startswith("--"):
        raise SSLSVError("first argument: the SSL yaml (hparams/simclr_ecapa.yaml)")
    yaml_path = _yaml_path(rest[0])
    found, overrides = pop_keys(rest[1:], ["output_folder"])
    if not found.get("output_folder"):
        raise SSLSVError("--output_folder is required")
    out = os.path.abspath(found["output_folder"])
    data_folder, extra, values = resolve_data(yaml_path, overrides)
    _, overrides = pop_keys(overrides, ["data_folder"])
    args = [f"--data_folder={data_folder}", *extra, *overrides]
    os.makedirs(out, exist_ok=True)

    done = os.path.join(out, "pretrain.done")
    if "pretrain" in stages and not os.path.isfile(done):
        log = os.path.join(out, "language_pretrain.log")
        run_script("train.py", [yaml_path, f"--output_folder={out}", *args], log)
        open(done, "w").close()
    trials_path, counts = build_trials(values, data_folder, out)
    rows = read_language_rows(
        resolve(values["language_train_list"], data_folder), values["language_key"]
    )
    n_lang = len({r[1] for r in rows})
    payload = {
        "data_folder": data_folder,
        "n_languages": n_lang,
        "chance_accuracy": 1.0 / n_lang,
        "trials": counts,
        "trial_list": trials_path,
    }
    payload["ssl"] = probe_and_verify(
        yaml_path, out, args, values, trials_path, stages, opts["probes"]
    )

    if "finetune" in stages:
        ft_yaml = _yaml_path(str(opts["finetune_yaml"]))
        ft_keys = _top_keys(ft_yaml)
        ssl_keys = _top_keys(yaml_path)
        # SSL-only yaml keys are dropped; run options (--precision, ...) are kept.
        ft_args = [
            a
            for a in args
            if a[2:].split("=", 1)[0] in ft_keys
            or a[2:].split("=", 1)[0] not in ssl_keys
        ]
        ft_run = os.path.join(out, "finetune")
        os.makedirs(ft_run, exist_ok=True)
        enc = os.path.join(ft_run, "ssl_encoder.ckpt")
        if not os.path.isfile(enc):
            extract_ssl_encoder(out, enc)
        ft_args = [
            a
            for a in ft_args
            if a[2:].split("=", 1)[0]
            not in ("train_list", "trial_lists", "n_classes", "label_key")
        ]
        ft_args += [
            f"--train_list={values['language_train_list']}",
            f"--label_key={values['language_key']}",
            f"--n_classes={n_lang}",
            "--trial_lists=[]",
            f"--encoder_checkpoint={enc}",
            f"--encoder_lr_factor={opts['finetune_lr_factor']}",
        ]
        done = os.path.join(ft_run, "finetune.done")
        if not os.path.isfile(done):
            log = os.path.join(ft_run, "language_finetune.log")
            run_script(
                "train.py", [ft_yaml, f"--output_folder={ft_run}", *ft_args], log
            )
            open(done, "w").close()
        payload["finetune"] = probe_and_verify(
            ft_yaml, ft_run, ft_args, values, trials_path, stages, opts["probes"]
        )

    with open(os.path.join(out, "language.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    md = format_markdown(payload)
    with open(os.path.join(out, "language.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)
    print(f"results written to {out}/language.{{json,md}}")
    return payload


if __name__ == "__main__":
    run_cli(main)
