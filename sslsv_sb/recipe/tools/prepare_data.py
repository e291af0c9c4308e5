"""The data-preparation commands of ``tools/prepare_data/``.

One ``<name>_main(argv)`` per script (usage in the scripts and in
``docs/data_preparation.md``): each parses its arguments and calls the preparation
function of :mod:`sslsv_sb.data.prepare`. A user error raises
:class:`~sslsv_sb.errors.SSLSVError`, which the scripts' ``run_cli`` prints as one
line with exit status 2.
"""

import argparse

from sslsv_sb.data.prepare.cremad import prepare_cremad
from sslsv_sb.data.prepare.kaldi import import_kaldi
from sslsv_sb.data.prepare.musan_rir import prepare_augmentation
from sslsv_sb.data.prepare.sitw import prepare_sitw
from sslsv_sb.data.prepare.voices import prepare_voices
from sslsv_sb.data.prepare.voxceleb import prepare_voxceleb
from sslsv_sb.data.prepare.voxlingua import prepare_voxlingua107

# Help-text titles of the scripts (their docstrings' first lines).
DESCRIPTIONS = {
    "import_kaldi": (
        "Import a Kaldi data directory (wav.scp [+ utt2spk] [+ "
        "trials]) as project lists."
    ),
    "prepare_augmentation": (
        "Prepare MUSAN chunks (musan_split/) and RIRS_NOISES (simulated_rirs/) + CSVs."
    ),
    "prepare_cremad": (
        "Write cremad_train.csv (File,Emotion,Set) from CREMA-D AudioWAV/."
    ),
    "prepare_sitw": "Build SITW trial lists sitw_{dev,eval}_core-{core,multi}.",
    "prepare_voices": "Build the VOiCES 2019 development trial list voices2019_dev.",
    "prepare_voxceleb": (
        "Prepare VoxCeleb1/2: voxceleb{1,2}_train.csv and Vox1-O/E/H "
        "+ VoxSRC-2021 trials."
    ),
    "prepare_voxlingua107": "Write voxlingua107_train.csv (File,Language[,Set]).",
}


def import_kaldi_main(argv=None):
    """``import_kaldi.py``: parse arguments, run :func:`import_kaldi`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["import_kaldi"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--wav_scp", required=True, help="wav.scp or a Kaldi data directory")
    p.add_argument("--utt2spk")
    p.add_argument(
        "--out_csv",
        default="kaldi_train.csv",
        help="train list name ('none' for no train list)",
    )
    p.add_argument("--trials", nargs="*", default=[])
    p.add_argument("--out_trials", nargs="*")
    p.add_argument(
        "--trials_wav_scp",
        nargs="*",
        default=[],
        help="extra wav.scp files for trial utterance ids",
    )
    p.add_argument(
        "--skip_commands",
        action="store_true",
        help="skip (and count) piped-command / ark wav.scp entries",
    )
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    a = p.parse_args(argv)
    import_kaldi(
        a.data_folder,
        a.wav_scp,
        a.utt2spk,
        None if a.out_csv == "none" else a.out_csv,
        a.trials,
        a.out_trials,
        a.trials_wav_scp,
        "skip" if a.skip_commands else "error",
        not a.no_check_audio,
        a.skip_invalid,
    )


def augmentation_main(argv=None):
    """``prepare_augmentation.py``: run :func:`prepare_augmentation`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_augmentation"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--musan", help="extracted MUSAN folder")
    p.add_argument("--rirs", help="extracted RIRS_NOISES folder")
    p.add_argument(
        "--download",
        action="store_true",
        help="download musan.tar.gz and rirs_noises.zip (OpenSLR 17/28)",
    )
    p.add_argument("--urls", help="URL list replacing the OpenSLR defaults")
    p.add_argument("--chunk_length", type=float, default=8.0, help="seconds")
    p.add_argument("--stride", type=float, default=8.0, help="seconds")
    p.add_argument(
        "--min_length",
        type=float,
        default=1.0,
        help="shortest tail chunk kept, seconds",
    )
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument(
        "--csv_prefix",
        help="write CSV paths as PREFIX/<relative path> "
        "(e.g. '$data_folder') instead of absolute paths",
    )
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument(
        "--no-verify",
        "--no_verify",
        dest="no_verify",
        action="store_true",
        help="download --urls entries that have no known checksum",
    )
    a = p.parse_args(argv)
    prepare_augmentation(
        a.data_folder,
        a.musan,
        a.rirs,
        a.download,
        a.urls,
        a.chunk_length,
        a.stride,
        a.min_length,
        a.mode,
        a.skip_invalid,
        a.csv_prefix,
        a.force,
        verify=not a.no_verify,
    )


def cremad_main(argv=None):
    """``prepare_cremad.py``: parse arguments, run :func:`prepare_cremad`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_cremad"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--cremad", required=True, help="folder holding AudioWAV/")
    p.add_argument("--split", default="speaker", choices=["speaker", "random"])
    p.add_argument("--test_ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--drop_emotions",
        nargs="*",
        default=[],
        help="emotion codes to leave out (sslsv dropped DIS)",
    )
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_cremad(
        a.data_folder,
        a.cremad,
        a.split,
        a.test_ratio,
        a.seed,
        a.drop_emotions,
        a.mode,
        not a.no_check_audio,
        a.skip_invalid,
        force=a.force,
    )


def sitw_main(argv=None):
    """``prepare_sitw.py``: parse arguments, run :func:`prepare_sitw`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_sitw"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--sitw", required=True, help="SITW folder with dev/ and eval/")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--skip_missing", action="store_true")
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_sitw(
        a.data_folder,
        a.sitw,
        a.mode,
        skip_missing=a.skip_missing,
        check_audio=not a.no_check_audio,
        force=a.force,
    )


def voices_main(argv=None):
    """``prepare_voices.py``: parse arguments, run :func:`prepare_voices`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_voices"])
    p.add_argument("--data_folder", required=True)
    p.add_argument(
        "--voices",
        required=True,
        help="folder containing sid_dev/ and sid_dev_lists_and_keys/",
    )
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--skip_missing", action="store_true")
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_voices(
        a.data_folder, a.voices, a.mode, a.skip_missing, not a.no_check_audio, a.force
    )


def voxceleb_main(argv=None):
    """``prepare_voxceleb.py``: parse arguments, run :func:`prepare_voxceleb`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_voxceleb"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--vox1", nargs="+", help="extracted VoxCeleb1 dev/test folders")
    p.add_argument("--vox2", nargs="+", help="extracted VoxCeleb2 dev folder(s)")
    p.add_argument(
        "--trials_dir",
        help="folder with veri_test2.txt, "
        "list_test_all2.txt, list_test_hard2.txt, voxsrc2021_val.txt",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download the archives listed in --urls first",
    )
    p.add_argument("--urls", help="URL list: '<file name> <url> [checksum]' per line")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument(
        "--skip_invalid",
        action="store_true",
        help="leave invalid audio out of the train lists (counted)",
    )
    p.add_argument(
        "--skip_missing",
        action="store_true",
        help="leave trials with missing files out (counted)",
    )
    p.add_argument("--force", action="store_true", help="redo finished steps")
    p.add_argument(
        "--no-verify",
        "--no_verify",
        dest="no_verify",
        action="store_true",
        help="download --urls entries that have no checksum",
    )
    a = p.parse_args(argv)
    prepare_voxceleb(
        a.data_folder,
        a.vox1,
        a.vox2,
        a.trials_dir,
        a.urls,
        a.download,
        a.user,
        a.password,
        a.mode,
        a.num_workers,
        not a.no_check_audio,
        a.skip_invalid,
        a.skip_missing,
        a.force,
        verify=not a.no_verify,
    )


def voxlingua107_main(argv=None):
    """``prepare_voxlingua107.py``: run :func:`prepare_voxlingua107`."""
    p = argparse.ArgumentParser(description=DESCRIPTIONS["prepare_voxlingua107"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--voxlingua", required=True, help="folder with <lang>/*.wav")
    p.add_argument("--dev", help="official dev folder (<lang>/*.wav) -> Set=test")
    p.add_argument("--val_ratio", type=float, default=0.0)
    p.add_argument("--subsample", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_voxlingua107(
        a.data_folder,
        a.voxlingua,
        a.dev,
        a.val_ratio,
        a.subsample,
        a.seed,
        a.mode,
        not a.no_check_audio,
        a.skip_invalid,
        force=a.force,
    )
