"""Load a recipe's hyper-parameters (HyperPyYAML) from the command line.

Errors a user can cause (missing yaml, unknown ``--key``, bad yaml) raise
:class:`~sslsv_sb.errors.SSLSVError` with one line naming the file and the key.
"""

import hashlib
import json
import logging
import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAMLError
from speechbrain.utils.distributed import run_on_main

from sslsv_sb.errors import SSLSVError

logger = logging.getLogger(__name__)


def load_yaml(hparams_file, overrides):
    """Load ``hparams_file`` with HyperPyYAML, applying ``overrides``.

    Arguments
    ---------
    hparams_file : str
        Path of the yaml.
    overrides : str or dict
        Overrides (yaml text ``"key: value"`` lines, as returned by
        ``speechbrain.parse_arguments``, or a dict).

    Returns
    -------
    dict
        The loaded hyper-parameters (objects built).

    Raises
    ------
    SSLSVError
        Unknown override key, or invalid yaml / override value.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except KeyError as err:
        raise SSLSVError(
            f"{hparams_file}: unknown hyper-parameter on the command line: {err}"
        ) from err
    except YAMLError as err:
        msg = " ".join(str(err).split())
        raise SSLSVError(f"{hparams_file}: invalid yaml or override: {msg}") from err


def load_hparams(argv, recipe_dir=None):
    """Parse the command line and load the yaml (errors name the offending key).

    Without a data folder, the embedded corpus is generated if missing and the yaml's
    ``embedded:`` values are applied as if given on the command line (explicit
    command-line values win), so objects built from them see the right values.

    Arguments
    ---------
    argv : list of str
        ``[hparams_file, --key=value, ...]`` (SpeechBrain run options included).
    recipe_dir : str or None
        Folder tried for ``hparams_file`` when it is not found from the current
        directory (e.g. the recipe's folder, for ``hparams/simclr_ecapa.yaml``).

    Returns
    -------
    (str, speechbrain RunOptions, str, dict)
        The yaml path, the run options, the overrides (yaml text, embedded-corpus
        values included) and the loaded hyper-parameters.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if not os.path.isfile(hparams_file):
        alt = os.path.join(recipe_dir, hparams_file) if recipe_dir else None
        if alt and os.path.isfile(alt):
            hparams_file = alt
        else:
            raise SSLSVError(f"hparams file not found: {hparams_file}")
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_yaml(hparams_file, overrides)
    if not hparams.get("data_folder"):
        from sslsv_sb.data.corpus import default_data_folder, ensure_corpus

        preset = hparams.get("corpus_preset", "demo")
        knobs = dict(hparams.get("corpus") or {})
        # One folder per (preset, knobs): a multilingual or resized corpus never
        # collides with the default demo corpus.
        name = preset
        if knobs:
            digest = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode())
            name = f"{preset}-{digest.hexdigest()[:8]}"
        corpus_kwargs = {
            "out_dir": os.path.join(default_data_folder(), name),
            "preset": preset,
            **knobs,
        }
        folder = run_on_main(ensure_corpus, kwargs=corpus_kwargs)
        folder = str(folder or ensure_corpus(**corpus_kwargs))
        given = {line.split(":")[0].strip() for line in overrides.splitlines()}
        extra = {k: v for k, v in hparams.get("embedded", {}).items() if k not in given}
        extra["data_folder"] = folder
        lines = [overrides] if overrides.strip() else []
        lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
        overrides = "\n".join(lines)
        logger.info("no data_folder given: using the embedded corpus %s", folder)
        hparams = load_yaml(hparams_file, overrides)
    if not os.path.isdir(hparams["data_folder"]):
        raise SSLSVError(
            f"data folder not found: {hparams['data_folder']} (--data_folder)"
        )
    return hparams_file, run_opts, overrides, hparams
