"""Command-line arguments of the tiny training runs that the recipe tests start."""

#: The embedded tiny corpus's layout (train.py finds it by itself only by default).
CORPUS_ARGS = [
    "--train_list=train.csv",
    "--trial_lists=[trials.txt]",
    "--noise_folder=noise",
    "--rir_folder=rirs",
]
#: One short epoch of batches of 4, in this process, without a progress bar.
BUDGET_ARGS = [
    "--batch_size=4",
    "--frame_length=4000",
    "--number_of_epochs=1",
    "--num_workers=0",
    "--noprogressbar",
]
#: The small ECAPA of the tiny runs.
MODEL_ARGS = ["--channels=[16,16,16,16,48]", "--emb_dim=16"]


def with_overrides(base, *extra):
    """``base`` without the ``--key`` of any ``extra`` argument, then ``extra``.

    >>> with_overrides(["--a=1", "--b=2"], "--b=3", "--c")
    ['--a=1', '--b=3', '--c']
    """
    keys = {e.split("=")[0] for e in extra}
    return [a for a in base if a.split("=")[0] not in keys] + list(extra)
