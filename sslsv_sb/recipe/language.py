"""``recipes/VoxLingua/SSL/language.py``: language recognition with an SSL encoder.

:func:`main` runs the stages (:data:`STAGES`) of the language-ID family, each as the
VoxCeleb recipe script a user would run (``train.py``, ``downstream.py``,
``evaluate.py``) in a subprocess, skipping the stages whose output exists:
SSL pre-training, linear / MLP probes for ``language_key``, language-verification
trials (:func:`build_trials`) and an optional supervised fine-tuning that is probed
and verified the same way. Results: ``<output_folder>/language.{json,md}``.

The output folder is locked for the whole command
(:class:`sslsv_sb.recipe.runfolder.FolderLock` on :data:`LOCK_NAME`: the folder is
also the SSL run, whose ``.run.lock`` each stage's script takes in turn), so a
second ``language.py`` on it, which would rewrite the trial list a running
evaluation reads and the summary files, is refused with one line naming the holder.
The summary files are written under a temporary name and renamed.
"""

import json
import os
import subprocess
import sys

from sslsv_sb.data.language_trials import (
    make_language_trials,
    read_language_rows,
    split_speakers,
    write_trials,
)
from sslsv_sb.data.lists import resolve
from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import atomic_path
from sslsv_sb.recipe.cli import pop_keys, split_flags
from sslsv_sb.recipe.hparams import load_yaml, top_level_keys
from sslsv_sb.recipe.models import extract_encoder
from sslsv_sb.recipe.paths import VOXLINGUA_SSL, voxceleb_script
from sslsv_sb.recipe.runfolder import FolderLock, make_folder, remove_empty

STAGES = ("pretrain", "probe", "verify", "finetune")
# The command's lock file in the output folder (not ``.run.lock``, which the
# stages' train.py / downstream.py / evaluate.py take on the same folder).
LOCK_NAME = ".language.lock"
FLAGS = {
    "stages": ["pretrain", "probe", "verify"],
    "probes": ["linear", "mlp"],
    "finetune_lr_factor": 0.1,
    "finetune_yaml": str(VOXLINGUA_SSL / "hparams" / "supervised_ecapa.yaml"),
}


def _yaml_path(path):
    """Absolute path of a yaml, tried as given then in ``recipes/VoxLingua/SSL``."""
    if os.path.isfile(path):
        return os.path.abspath(path)
    alt = str(VOXLINGUA_SSL / path)
    if os.path.isfile(alt):
        return alt
    raise SSLSVError(f"hparams file not found: {path}")


def _top_keys(path):
    """Top-level keys of a yaml merged over its ``extends`` (no object is built)."""
    return set(top_level_keys(path))


def _override_keys(args):
    """Names of the ``--key[=value]`` arguments."""
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
    top = _top_keys(yaml_path)
    lines = [
        f"{a[2:].split('=', 1)[0]}: {a.split('=', 1)[1]}"
        for a in overrides
        if a.startswith("--") and "=" in a and a[2:].split("=", 1)[0] in top
    ]
    try:
        raw = load_yaml(yaml_path, "\n".join(lines))
    except SSLSVError:
        raise
    except Exception as err:  # noqa: BLE001 - any other yaml / override problem
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
            [sys.executable, voxceleb_script(script), *args],
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


def finetune(yaml_path, out, args, values, n_lang, opts):
    """Fine-tune the SSL encoder on the language labels (supervised AAM yaml).

    Arguments
    ---------
    yaml_path : str
        The SSL yaml (its keys that the fine-tuning yaml lacks are dropped).
    out : str
        The SSL run folder; the fine-tuned run goes to ``<out>/finetune``.
    args : list of str
        The SSL run's ``--key=value`` arguments.
    values : dict
        The ``language_*`` values of :func:`resolve_data`.
    n_lang : int
        Number of languages (classes).
    opts : dict
        The script's flags (``finetune_yaml``, ``finetune_lr_factor``).

    Returns
    -------
    (str, str, list of str)
        The fine-tuning yaml, its run folder and its arguments.
    """
    ft_yaml = _yaml_path(str(opts["finetune_yaml"]))
    ft_keys = _top_keys(ft_yaml)
    ssl_keys = _top_keys(yaml_path)
    # SSL-only yaml keys are dropped; run options (--precision, ...) are kept.
    ft_args = [
        a
        for a in args
        if a[2:].split("=", 1)[0] in ft_keys or a[2:].split("=", 1)[0] not in ssl_keys
    ]
    ft_run = os.path.join(out, "finetune")
    os.makedirs(ft_run, exist_ok=True)
    enc = os.path.join(ft_run, "ssl_encoder.ckpt")
    if not os.path.isfile(enc):
        extract_encoder(out, enc)
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
        run_script("train.py", [ft_yaml, f"--output_folder={ft_run}", *ft_args], log)
        open(done, "w").close()
    return ft_yaml, ft_run, ft_args


def _stage_names(value):
    """``--stages`` as a list of known stage names."""
    stages = [value] if isinstance(value, str) else list(value)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SSLSVError(f"--stages: unknown {bad}; choose from {list(STAGES)}")
    return stages


def main(argv):
    """Run the requested stages.

    Arguments
    ---------
    argv : list of str
        ``[SSL yaml, --output_folder=..., --key=value, ...]``: the flags of
        :data:`FLAGS` and the overrides passed to every stage.

    Returns
    -------
    dict
        The ``language.json`` payload.
    """
    opts, rest = split_flags(argv, FLAGS)
    stages = _stage_names(opts["stages"])
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
    created = make_folder(out, "--output_folder")
    try:
        with FolderLock(
            out,
            role="language.py",
            hint="wait for it to end, or use another --output_folder",
            name=LOCK_NAME,
        ):
            return _language(yaml_path, out, args, values, data_folder, stages, opts)
    finally:
        remove_empty(created)  # a command refused before writing leaves no folder


def _language(yaml_path, out, args, values, data_folder, stages, opts):
    """:func:`main` with the output folder locked."""
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
        ft_yaml, ft_run, ft_args = finetune(yaml_path, out, args, values, n_lang, opts)
        payload["finetune"] = probe_and_verify(
            ft_yaml, ft_run, ft_args, values, trials_path, stages, opts["probes"]
        )

    md = format_markdown(payload)
    for name, text in (
        ("language.json", json.dumps(payload, indent=2)),
        ("language.md", md),
    ):
        with (
            atomic_path(os.path.join(out, name)) as tmp,
            open(tmp, "w", encoding="utf-8") as f,
        ):
            f.write(text)
    print(md)
    print(f"results written to {out}/language.{{json,md}}")
    return payload
