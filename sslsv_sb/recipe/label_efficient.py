"""``recipes/VoxCeleb/SSL/label_efficient.py``: EER versus label fraction.

:func:`main` trains the supervised recipe on nested subsets of the labelled train
list (:mod:`sslsv_sb.data.fractions`), once per mode (``finetune`` / ``frozen`` from
the SSL encoder, ``scratch``), each run an ordinary ``train.py`` subprocess in
``<output_folder>/<mode>_<pct>pct`` (:func:`run_dir`); finished runs are skipped,
so the command resumes. The results go to ``label_efficient.{json,md,png}``.

The output folder is locked for the whole command
(:class:`sslsv_sb.recipe.runfolder.FolderLock`, ``<output_folder>/.run.lock``; each
run's ``train.py`` locks its own sub-folder): a second ``label_efficient.py`` on it
would rewrite the config, the subset lists a running training reads and the
summary files, and is refused with one line naming the holder. Every file it writes
is written under a temporary name and renamed.
"""

import json
import os
import subprocess
import sys

from sslsv_sb.data.fractions import (
    UNITS,
    check_fraction,
    read_list_for_fractions,
    select_fraction,
    write_fraction_list,
)
from sslsv_sb.data.lists import resolve
from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import atomic_path
from sslsv_sb.recipe.cli import pop_keys, split_flags
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import extract_encoder
from sslsv_sb.recipe.paths import VOXCELEB_SSL, voxceleb_script
from sslsv_sb.recipe.runfolder import FolderLock, make_folder, remove_empty

TRAIN = voxceleb_script("train.py")
MODES = ("finetune", "frozen", "scratch")
FLAGS = {
    "ssl_run": None,
    "ssl_encoder": None,
    "fractions": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
    "fraction_unit": "speakers",
    "subset_seed": 0,
    "modes": ["finetune", "scratch"],
    "finetune_lr_factor": 0.1,
    "min_classes": 2,
    "no_plot": False,
}
PER_RUN_KEYS = (
    "output_folder",
    "train_list",
    "n_classes",
    "batch_size",
    "freeze_encoder",
    "encoder_lr_factor",
    "encoder_checkpoint",
)
# Keys of the first run's config that must not change when resuming.
RESUME_KEYS = ("train_list", "label_key", "fraction_unit", "subset_seed", "ssl")


def pct_name(fraction):
    """Folder-friendly percentage: 0.05 -> ``"5"``, 0.005 -> ``"0.5"``."""
    return f"{100.0 * fraction:.6g}"


def run_dir(out, mode, fraction):
    """Folder of one (mode, fraction) run."""
    return os.path.join(out, f"{mode}_{pct_name(fraction)}pct")


def parse_options(argv):
    """Split the label-efficient flags from the ``train.py`` arguments; validate.

    Arguments
    ---------
    argv : list of str

    Returns
    -------
    (dict, list)
        Options and the remaining arguments (yaml + overrides).
    """
    opts, rest = split_flags(argv, FLAGS)
    fr = opts["fractions"]
    fr = [fr] if not isinstance(fr, list | tuple) else list(fr)
    opts["fractions"] = sorted({check_fraction(f) for f in fr})
    modes = opts["modes"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise SSLSVError(f"--modes: unknown {bad}; choose from {list(MODES)}")
    opts["modes"] = modes
    if opts["fraction_unit"] not in UNITS:
        raise SSLSVError(
            f"--fraction_unit must be one of {list(UNITS)}, got "
            f"{opts['fraction_unit']!r}"
        )
    if float(opts["finetune_lr_factor"]) <= 0:
        raise SSLSVError("--finetune_lr_factor must be > 0")
    needs_ssl = any(m in ("finetune", "frozen") for m in modes)
    if needs_ssl and not (opts["ssl_run"] or opts["ssl_encoder"]):
        raise SSLSVError(
            "--modes finetune/frozen need an SSL model: --ssl_run=RUN_FOLDER or "
            "--ssl_encoder=embedding_model.ckpt"
        )
    if opts["ssl_run"] and opts["ssl_encoder"]:
        raise SSLSVError("give --ssl_run or --ssl_encoder, not both")
    if not rest or rest[0].startswith("--"):
        raise SSLSVError("first argument: the supervised yaml (hparams/supervised_*)")
    out = [a for a in rest if a.startswith("--output_folder")]
    if not out:
        raise SSLSVError("--output_folder is required (the label-efficient folder)")
    return opts, rest


def base_hparams(rest, out):
    """Load the supervised yaml once (embedded corpus, resolved train list)."""
    _, _, _, hparams = load_hparams(
        [*rest, f"--output_folder={out}"], recipe_dir=str(VOXCELEB_SSL)
    )
    save = os.path.join(out, "save")
    if os.path.isdir(save) and not os.listdir(save):
        os.rmdir(save)  # created by the yaml's Checkpointer; no run lives here
    if not hparams.get("label_key"):
        raise SSLSVError(
            f"{rest[0]}: label_key is empty; the label-efficient protocol trains the "
            "supervised recipe (hparams/supervised_*.yaml)"
        )
    return hparams


def check_resume(out, config):
    """Write ``label_efficient_config.json`` or check it matches a previous run."""
    path = os.path.join(out, "label_efficient_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        diff = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
        if diff:
            raise SSLSVError(
                f"{path}: {out} was started with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} -> {[config.get(k) for k in diff]}); "
                "use another --output_folder"
            )
    os.makedirs(out, exist_ok=True)
    _write_text(path, json.dumps(config, indent=2))


def _write_text(path, text):
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def read_run(folder):
    """``{list: {eer, mindcf_0.01}}`` (cosine) of a finished run's verification."""
    with open(os.path.join(folder, "verification.json"), encoding="utf-8") as f:
        ver = json.load(f)
    res = {}
    for name, backends in ver["lists"].items():
        m = backends.get("cosine") or next(iter(backends.values()))
        res[name] = {"eer": m["eer"], "mindcf_0.01": m.get("mindcf_0.01")}
    return res


def run_one(folder, args, log_path):
    """Run ``train.py`` with ``args`` (output in ``log_path``); raise on failure."""
    os.makedirs(folder, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, TRAIN, *args], stdout=log, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = f.read()[-2000:]
        raise SSLSVError(
            f"run {folder} failed (exit {proc.returncode}); see {log_path}:\n{tail}"
        )


def format_markdown(payload):
    """Markdown table: one row per fraction, one EER column per mode and list."""
    modes = payload["modes"]
    lists = payload["lists"]
    head = ["fraction", "classes", "utterances"]
    head += [f"{m} EER (%) {name}" for name in lists for m in modes]
    lines = [
        "# Label-efficient evaluation",
        "",
        f"Supervised yaml `{payload['hparams']}`, train list `{payload['train_list']}`,"
        f" subsets of {payload['fraction_unit']} (seed {payload['subset_seed']}),"
        f" SSL model `{payload.get('ssl') or '-'}`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in payload["rows"]:
        cells = [f"{100 * row['fraction']:g} %", str(row["n_classes"])]
        cells.append(str(row["n_utterances"]))
        for name in lists:
            for m in modes:
                r = row["results"].get(m, {}).get(name)
                cells.append("-" if r is None else f"{r['eer']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    ssl = payload.get("ssl_only")
    if ssl:
        lines += [
            "",
            "SSL model without labels (cosine): "
            + ", ".join(f"{k} {v['eer']:.2f} %" for k, v in ssl.items()),
        ]
    return "\n".join(lines) + "\n"


def plot_curve(payload, path):
    """EER versus label fraction (log x axis), one line per mode; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = payload["lists"][0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in payload["modes"]:
        pts = [
            (100 * r["fraction"], r["results"][mode][name]["eer"])
            for r in payload["rows"]
            if name in r["results"].get(mode, {})
        ]
        if pts:
            x, y = zip(*pts, strict=True)
            label = {"finetune": "SSL init, fine-tuned", "frozen": "SSL init, frozen"}
            ax.plot(x, y, marker="o", label=label.get(mode, mode))
    ssl = (payload.get("ssl_only") or {}).get(name)
    if ssl:
        ax.axhline(ssl["eer"], ls="--", c="gray", label="SSL, no labels")
    ax.set_xscale("log")
    ax.set_xlabel(f"labelled {payload['fraction_unit']} (%)")
    ax.set_ylabel(f"EER (%) on {name}")
    ax.set_title("Label-efficient evaluation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def ssl_source(opts):
    """The SSL model of the ``finetune`` / ``frozen`` modes.

    Arguments
    ---------
    opts : dict
        Options from :func:`parse_options`.

    Returns
    -------
    (str or None, str or None)
        The encoder state-dict file given with ``--ssl_encoder`` (``None`` with
        ``--ssl_run``: extracted later) and the description recorded in the config.
    """
    if opts["ssl_encoder"]:
        ssl_ckpt = os.path.abspath(str(opts["ssl_encoder"]))
        if not os.path.isfile(ssl_ckpt):
            raise SSLSVError(f"--ssl_encoder: {ssl_ckpt} not found")
        return ssl_ckpt, ssl_ckpt
    if opts["ssl_run"]:
        return None, os.path.abspath(str(opts["ssl_run"]))
    return None, None


def run_args(run_rest, folder, row, mode, opts, ssl_ckpt):
    """``train.py`` overrides of one (mode, fraction) run.

    Arguments
    ---------
    run_rest : list of str
        The user's arguments without the keys set per run.
    folder : str
        The run's output folder.
    row : dict
        The fraction's row (``train_list``, ``n_classes``, ``batch_size``).
    mode : str
        ``finetune``, ``frozen`` or ``scratch``.
    opts : dict
        Options from :func:`parse_options`.
    ssl_ckpt : str or None
        SSL encoder state dict (not used by ``scratch``).

    Returns
    -------
    list of str
    """
    factor = opts["finetune_lr_factor"] if mode == "finetune" else 1.0
    args = [
        *run_rest,
        f"--output_folder={folder}",
        f"--train_list={row['train_list']}",
        f"--n_classes={row['n_classes']}",
        f"--batch_size={row['batch_size']}",
        f"--freeze_encoder={mode == 'frozen'}",
        f"--encoder_lr_factor={factor}",
        f"--encoder_checkpoint={ssl_ckpt if mode != 'scratch' else 'null'}",
    ]
    user_set = any(a.startswith("--eval_untrained") for a in run_rest)
    if mode != "scratch" and not user_set:
        # train.py scores the "untrained" model before the SSL weights
        # are loaded (fit start): the random init, as in the scratch run.
        args.append("--eval_untrained=False")
    return args


def run_fraction(fraction, df, label_key, batch, out, opts, run_rest, ssl_ckpt):
    """Write the fraction's train list and train (or read) its runs, one per mode.

    Arguments
    ---------
    fraction : float
        Label fraction in ``(0, 1]``.
    df : pandas.DataFrame
        The labelled train list.
    label_key : str
        Label column.
    batch : int
        The yaml's batch size (capped at the subset size).
    out : str
        Label-efficient output folder.
    opts : dict
        Options from :func:`parse_options`.
    run_rest : list of str
        The user's arguments without the keys set per run.
    ssl_ckpt : str or None
        SSL encoder state dict.

    Returns
    -------
    dict
        The fraction's row of ``label_efficient.json``.
    """
    idx = select_fraction(
        list(df["File"]),
        list(df[label_key]),
        fraction,
        unit=opts["fraction_unit"],
        seed=int(opts["subset_seed"]),
        min_classes=int(opts["min_classes"]),
    )
    sub_list = os.path.join(out, "lists", f"train_{pct_name(fraction)}pct.csv")
    write_fraction_list(df, idx, sub_list)
    n_classes = int(df[label_key].iloc[idx].nunique())
    row = {
        "fraction": fraction,
        "n_utterances": len(idx),
        "n_classes": n_classes,
        "batch_size": min(batch, len(idx)),
        "train_list": sub_list,
        "results": {},
        "runs": {},
    }
    for mode in opts["modes"]:
        folder = run_dir(out, mode, fraction)
        row["runs"][mode] = folder
        if not os.path.isfile(os.path.join(folder, "verification.json")):
            args = run_args(run_rest, folder, row, mode, opts, ssl_ckpt)
            print(
                f"[label-efficient] {mode} {100 * fraction:g} % "
                f"({n_classes} classes, {len(idx)} utterances) -> {folder}",
                flush=True,
            )
            run_one(folder, args, os.path.join(folder, "label_efficient.log"))
        row["results"][mode] = read_run(folder)
    return row


def main(argv):
    """Run every (fraction, mode), then write the table and the curve.

    Arguments
    ---------
    argv : list of str
        ``[supervised yaml, --key=value, ...]``: the flags of :data:`FLAGS`,
        ``--output_folder`` and the overrides passed to every ``train.py`` run.

    Returns
    -------
    dict
        The ``label_efficient.json`` payload.
    """
    opts, rest = parse_options(argv)
    found, rest = pop_keys(rest, ["output_folder"])
    out = os.path.abspath(found["output_folder"])
    created = make_folder(out, "--output_folder")
    try:
        with FolderLock(
            out,
            role="label_efficient.py",
            hint="wait for it to end, or use another --output_folder",
        ):
            return _label_efficient(opts, rest, out)
    finally:
        remove_empty(created)  # a command refused before writing leaves no folder


def _label_efficient(opts, rest, out):
    """:func:`main` with the output folder locked."""
    hparams = base_hparams(rest, out)
    data_folder = hparams["data_folder"]
    list_path = resolve(hparams["train_list"], data_folder)
    label_key = hparams["label_key"]
    df = read_list_for_fractions(list_path, label_key)

    ssl_ckpt, ssl_desc = ssl_source(opts)
    config = {
        "hparams": rest[0],
        "train_list": os.path.abspath(list_path),
        "label_key": label_key,
        "fraction_unit": opts["fraction_unit"],
        "subset_seed": int(opts["subset_seed"]),
        "ssl": ssl_desc if any(m != "scratch" for m in opts["modes"]) else None,
        "finetune_lr_factor": float(opts["finetune_lr_factor"]),
        "overrides": rest[1:],
    }
    check_resume(out, config)
    if opts["ssl_run"] and any(m != "scratch" for m in opts["modes"]):
        ssl_ckpt = os.path.join(out, "ssl_encoder.ckpt")
        if not os.path.isfile(ssl_ckpt):
            extract_encoder(opts["ssl_run"], ssl_ckpt, flag="--ssl_run")

    # Keys set per run: the user's values of them are dropped from the runs' args.
    _, run_rest = pop_keys(rest, PER_RUN_KEYS)
    batch = int(hparams["batch_size"])
    rows = [
        run_fraction(f, df, label_key, batch, out, opts, run_rest, ssl_ckpt)
        for f in opts["fractions"]
    ]

    lists = list(rows[0]["results"][opts["modes"][0]])
    payload = {
        **config,
        "modes": opts["modes"],
        "fractions": opts["fractions"],
        "lists": lists,
        "rows": rows,
    }
    if opts["ssl_run"] and os.path.isfile(
        os.path.join(opts["ssl_run"], "verification.json")
    ):
        payload["ssl_only"] = read_run(opts["ssl_run"])
    _write_text(
        os.path.join(out, "label_efficient.json"), json.dumps(payload, indent=2)
    )
    md = format_markdown(payload)
    _write_text(os.path.join(out, "label_efficient.md"), md)
    if not opts["no_plot"]:
        plot_curve(payload, os.path.join(out, "label_efficient.png"))
    print(md)
    print(f"results written to {out}/label_efficient.{{json,md,png}}")
    return payload
