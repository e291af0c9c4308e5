"""Import Kaldi data directories (also how ssl-for-slr users bring their data).

Kaldi formats:

- ``wav.scp``: ``<utt id> <rxfilename>`` per line. Plain paths are supported;
  piped commands (``sox ... - |``, ``ffmpeg ... |``) and ``ark:offset`` entries are
  not audio files: they raise an error naming the line, or with ``on_command="skip"``
  are skipped and counted (convert them to wav first, e.g. with Kaldi's
  ``wav-copy scp:wav.scp ark,scp:...`` or by running the pipe into files).
- ``utt2spk``: ``<utt id> <speaker id>``.
- trials: ``<enrol utt> <test utt> <target|nontarget>`` (utterance ids of the
  same or another data directory's ``wav.scp``).

Outputs: a train list ``File,Speaker`` (``File`` relative to the data folder when the
audio is inside it, absolute otherwise; without ``utt2spk`` each utterance is its own
``Speaker``, which self-supervised training does not use) and trial lists
``label enrol test``.
"""

import os

from sslsv_sb.data.prepare.common import (
    Report,
    check_audio_files,
    key_to_trials,
    rel_to,
    write_train_csv,
)
from sslsv_sb.errors import SSLSVError, where


def read_wav_scp(path, on_command="error", report=None):
    """Read ``wav.scp``.

    Arguments
    ---------
    path : str
        ``wav.scp`` file.
    on_command : str
        ``error`` (default) or ``skip`` for piped-command / ark entries.
    report : Report or None
        Where skipped entries are recorded.

    Returns
    -------
    dict
        ``{utt id: (audio path, line number)}`` in file order; relative audio paths
        are resolved against the current directory (Kaldi convention: paths are
        relative to the recipe folder).
    """
    if on_command not in ("error", "skip"):
        raise SSLSVError(f"on_command must be 'error' or 'skip', got '{on_command}'")
    if not os.path.isfile(path):
        raise SSLSVError(f"{path}: file not found")
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise SSLSVError(f"{where(path, lineno)}: expected '<utt id> <path>', "
                                 f"got '{line}'")
            utt, rx = parts[0], parts[1].strip()
            if utt in out:
                raise SSLSVError(f"{where(path, lineno)}: duplicate utterance id "
                                 f"'{utt}' (first on line {out[utt][1]})")
            is_cmd = rx.endswith("|")
            is_ark = not is_cmd and ".ark:" in rx
            if is_cmd or is_ark:
                kind = "a piped command" if is_cmd else "an ark offset"
                msg = (f"{where(path, lineno)}: '{utt}' is {kind}, not an audio file; "
                       "convert it to wav first (or use on_command='skip')")
                if on_command == "error":
                    raise SSLSVError(msg)
                if report is not None:
                    report.skip(msg)
                out[utt] = (None, lineno)
                continue
            out[utt] = (os.path.abspath(rx), lineno)
    return out


def read_utt2spk(path):
    """``{utt id: (speaker, line number)}`` from ``utt2spk`` (duplicates raise)."""
    if not os.path.isfile(path):
        raise SSLSVError(f"{path}: file not found")
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise SSLSVError(f"{where(path, lineno)}: expected '<utt id> "
                                 f"<speaker>', got '{line.strip()}'")
            if parts[0] in out:
                raise SSLSVError(f"{where(path, lineno)}: duplicate utterance id "
                                 f"'{parts[0]}' (first on line {out[parts[0]][1]})")
            out[parts[0]] = (parts[1], lineno)
    return out


def _list_path(audio, data_folder):
    rel = rel_to(audio, data_folder)
    return audio if rel.startswith("../") else rel


def import_kaldi(data_folder, wav_scp, utt2spk=None, out_csv="kaldi_train.csv",
                 trials=None, out_trials=None, trials_wav_scp=None,
                 on_command="error", check_audio=True, skip_invalid=False,
                 verbose=True):
    """Import a Kaldi data directory as a train list (and trial lists).

    Arguments
    ---------
    data_folder : str
        Data folder (lists are written there; paths inside it become relative).
    wav_scp : str
        ``wav.scp`` (or a Kaldi data directory holding ``wav.scp`` and optionally
        ``utt2spk``).
    utt2spk : str or None
        ``utt2spk``; every ``wav.scp`` utterance must have a speaker and vice versa.
    out_csv : str or None
        Train list name (relative to ``data_folder``); None: no train list.
    trials : list of str or None
        Kaldi trial files ``<enrol utt> <test utt> <target|nontarget>``.
    out_trials : list of str or None
        Output trial list names (default: each trial file's parent folder name and
        base name, e.g. ``sitw_dev_test_core-core``).
    trials_wav_scp : list of str or None
        Extra ``wav.scp`` files for the trial utterance ids (e.g. separate enrol and
        test directories); ``wav_scp`` is always used too.
    on_command : str
        ``error`` or ``skip`` for piped / ark entries in ``wav.scp``.
    check_audio : bool
        Validate the listed audio (exists, readable, non-empty, 16 kHz).
    skip_invalid : bool
        Drop and count invalid entries (bad audio, utterances without speaker,
        trials with unknown ids) instead of raising.
    verbose : bool
        Print progress.

    Returns
    -------
    Report
    """
    report = Report("kaldi", verbose)
    if os.path.isdir(wav_scp):
        d = wav_scp
        wav_scp = os.path.join(d, "wav.scp")
        if utt2spk is None and os.path.isfile(os.path.join(d, "utt2spk")):
            utt2spk = os.path.join(d, "utt2spk")
    os.makedirs(data_folder, exist_ok=True)
    scp = read_wav_scp(wav_scp, on_command, report)
    n_cmd = report.skipped_count
    report.summarize_skips("wav.scp entries (commands/ark)")
    report.skipped.clear()
    usable = {u: v for u, v in scp.items() if v[0] is not None}

    if out_csv is not None:
        spk = read_utt2spk(utt2spk) if utt2spk else None
        rows = []
        if spk is not None:
            extra = [u for u in spk if u not in scp]
            if extra:
                u = extra[0]
                msg = (f"{where(utt2spk, spk[u][1])}: utterance '{u}' is not in "
                       f"{wav_scp}")
                if not skip_invalid:
                    raise SSLSVError(msg + f" ({len(extra)} such utterances)")
                report.log(f"{len(extra)} utt2spk entries not in wav.scp ignored, "
                           f"e.g. {msg}")
        for u, (audio, lineno) in usable.items():
            if spk is not None and u not in spk:
                msg = f"{where(wav_scp, lineno)}: utterance '{u}' has no speaker in " \
                      f"{utt2spk}"
                if not skip_invalid:
                    raise SSLSVError(msg)
                report.skip(msg)
                continue
            rows.append((_list_path(audio, data_folder),
                         spk[u][0] if spk is not None else u, audio,
                         where(wav_scp, lineno)))
        if check_audio:
            valid = check_audio_files([(r[2], r[3]) for r in rows],
                                      skip_invalid=skip_invalid, report=report)
            rows = [rows[i] for i in valid]
        report.summarize_skips("utterances")
        report.skipped.clear()
        if not rows:
            raise SSLSVError(f"{wav_scp}: no usable utterance")
        out = os.path.join(data_folder, out_csv)
        write_train_csv(out, [r[:2] for r in rows])
        report.log(f"{out_csv}: {len(rows)} files, {len({r[1] for r in rows})} "
                   f"speakers from {wav_scp}"
                   + (f" ({n_cmd} command/ark entries skipped)" if n_cmd else ""))

    if trials:
        if out_trials is not None and len(out_trials) != len(trials):
            raise SSLSVError("give one output name per trial file")
        ids = dict(usable)
        for extra_scp in trials_wav_scp or []:
            for u, v in read_wav_scp(extra_scp, on_command, report).items():
                if u in ids and ids[u][0] != v[0]:
                    raise SSLSVError(f"{where(extra_scp, v[1])}: utterance '{u}' "
                                     "already maps to another file")
                if v[0] is not None:
                    ids[u] = v
            report.skipped.clear()

        def to_path(u):
            return _list_path(ids[u][0], data_folder) if u in ids else None

        for i, tf in enumerate(trials):
            name = (out_trials[i] if out_trials else
                    f"{os.path.basename(os.path.dirname(os.path.abspath(tf)))}_"
                    f"{os.path.splitext(os.path.basename(tf))[0]}")
            key_to_trials(tf, to_path, to_path, data_folder,
                          os.path.join(data_folder, name), skip_invalid, check_audio,
                          report)
    return report
