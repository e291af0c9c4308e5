"""Rendering: the worker tasks and the process pool that writes a corpus folder."""

import json
import multiprocessing
import shutil
import time
import warnings

import numpy as np

from sslsv_sb.data.corpus.banks import (
    bank_speech_tasks,
    render_bank_files,
    render_bank_speech,
)
from sslsv_sb.data.corpus.channel import apply_channel, channel_rir_bank
from sslsv_sb.data.corpus.files import write_text_atomic, write_wav
from sslsv_sb.data.corpus.lists import write_lists
from sslsv_sb.data.corpus.speakers import plan_speakers
from sslsv_sb.data.corpus.speech import SpeakerVoice
from sslsv_sb.errors import SSLSVError


def _fit_duration(speech, utt, sr, min_dur, max_dur):
    """Place ``(L,)`` speech after the utterance's lead silence, within the limits.

    Too long speech is cut (with a 50 ms fade-out) at ``max_dur``; short speech is
    padded with silence up to ``min_dur``. Returns the ``(L',)`` float waveform.
    """
    lead = int(utt["lead"] * sr)
    n_max, n_min = int(max_dur * sr), int(min_dur * sr)
    speech = speech[: max(n_max - lead, 1)]
    if speech.size + lead >= n_max:
        fade = min(int(0.05 * sr), speech.size)
        speech = speech.copy()
        speech[-fade:] *= np.linspace(1, 0, fade)
    total = min(max(lead + speech.size + int(0.1 * sr), n_min), n_max)
    out = np.zeros(total)
    out[lead : lead + speech.size] = speech[: total - lead]
    return out


def _render_speaker(task):
    """Render all utterances of one speaker; returns ``[(rel_path, n_samples)]``."""
    spk, cfg, backend, out, rirs, espeak_dir = task
    sr = cfg["sample_rate"]
    speaker = SpeakerVoice(spk["voice"], spk["id"], backend, sr, espeak_dir)
    rows = []
    try:
        for sess in spk["sessions"]:
            channel = sess["channel"]
            for k, utt in enumerate(sess["utts"], start=1):
                rng = np.random.default_rng([utt["seed"], 7])
                speech = speaker.speak(utt)
                speech = _fit_duration(
                    speech, utt, sr, cfg["min_duration"], cfg["max_duration"]
                )
                wav = apply_channel(speech, channel, rirs[channel["rir"]], sr, rng)
                rel = f"wav/{spk['id']}/{sess['id']}/{k:05d}.wav"
                write_wav(out / rel, wav, sr)
                rows.append((rel, wav.size))
    finally:
        speaker.close()
    return rows


def _run_task(task):
    """Run one ``(kind, payload)`` worker task; returns ``[(rel_path, n_samples)]``."""
    kind, payload = task
    fn = {
        "speaker": _render_speaker,
        "bank_speech": render_bank_speech,
        "bank_files": render_bank_files,
    }[kind]
    return fn(payload)


def _probe_espeak(_=None):
    """True if espeak-ng loads (run in a worker, which then owns the library)."""
    from sslsv_sb.data.espeak import espeak_available

    return espeak_available()


def _log(verbose, msg):
    """Print a progress line when ``verbose``."""
    if verbose:
        print(f"[sslsv_sb.corpus] {msg}", flush=True)


def render_corpus(out, cfg, workers, verbose):
    """Render every file of the corpus into the (prepared) folder ``out``.

    Arguments
    ---------
    out : pathlib.Path
        Corpus folder, empty but for the lock file.
    cfg : CorpusConfig
        Validated configuration.
    workers : int
        Worker processes (the output does not depend on it).
    verbose : bool
        Print progress.

    Returns
    -------
    dict
        The manifest, also written as ``corpus.json`` (last, marking completion).
    """
    start = time.time()
    (out / ".incomplete").write_text("generation in progress\n")
    cache = out / ".cache"
    cache.mkdir(exist_ok=True)
    cfg_dict = cfg.to_dict()
    speakers = plan_speakers(cfg)
    rirs = channel_rir_bank(cfg)
    # forkserver/spawn, not fork: forking a process that already runs torch/OpenMP
    # threads (a test session, a recipe) can leave a child blocked on an inherited
    # lock (seen as a hang in futex_do_wait).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context(
        "forkserver" if "forkserver" in methods else "spawn"
    )
    # every task loads a private espeak-ng instance (clean internal state), so the
    # output does not depend on which worker ran what before
    with ctx.Pool(max(1, int(workers))) as pool:
        backend = cfg.backend
        if backend != "numpy":
            ok = pool.apply(_probe_espeak)
            if not ok and backend == "espeak":
                raise SSLSVError(
                    "backend='espeak' but espeak-ng (espeakng-loader wheel) could not "
                    "be loaded; use backend='numpy' or 'auto'"
                )
            if not ok:
                warnings.warn(
                    "espeak-ng could not be loaded: the corpus uses the numpy "
                    "source-filter speech fallback",
                    stacklevel=2,
                )
            backend = "espeak" if ok else "numpy"
        _log(verbose, f"rendering {len(speakers)} speakers into {out} ({backend})")
        espeak_dir = None
        if backend == "espeak":
            from sslsv_sb.data.espeak import make_data_folder

            # one private data folder; each task writes (then removes) the variant
            # file of its speaker, so the folder never holds more than `workers`
            espeak_dir = make_data_folder(cache)
        tasks = [
            ("speaker", (s, cfg_dict, backend, out, rirs, espeak_dir)) for s in speakers
        ]
        tasks += bank_speech_tasks(cfg, backend, out, espeak_dir)
        if cfg.n_noise_files > 0:
            tasks += [("bank_files", (c, cfg_dict, out)) for c in ("noise", "music")]
        if cfg.n_rirs > 0:
            tasks += [("bank_files", ("rirs", cfg_dict, out))]
        lengths = {}
        for k, rows in enumerate(pool.imap_unordered(_run_task, tasks), start=1):
            lengths.update(rows)
            if verbose and (k % 20 == 0 or k == len(tasks)):
                _log(verbose, f"{k}/{len(tasks)} tasks done")
    manifest = write_lists(out, cfg, speakers, lengths)
    manifest.update(
        {
            "backend_used": backend,
            "seconds_taken": round(time.time() - start, 2),
            "workers": int(workers),
        }
    )
    shutil.rmtree(cache, ignore_errors=True)
    write_text_atomic(out / "corpus.json", json.dumps(manifest, indent=2) + "\n")
    (out / ".incomplete").unlink()
    _log(
        verbose,
        f"done in {manifest['seconds_taken']:.1f} s: {manifest['counts']['utterances']}"
        f" utterances, {manifest['total_duration_hours'] * 60:.1f} min of audio",
    )
    return manifest
