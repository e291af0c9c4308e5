"""sslsv_sb.recipe.downstream: reproducible held-out-speaker split of a label CSV."""

import numpy as np

from sslsv_sb.evaluation.classification import LabelRow
from sslsv_sb.recipe.downstream import split_rows


def test_split_rows_reproducible(tmp_path):
    csv = tmp_path / "l.csv"
    lines = ["File,Speaker,Gender"]
    rows = []
    for s in range(8):
        for u in range(3):
            lines.append(f"s{s}/{u}.wav,s{s},{'fm'[s % 2]}")
            rows.append(LabelRow(f"s{s}/{u}.wav", "fm"[s % 2], None))
    csv.write_text("\n".join(lines) + "\n")
    tr, te, desc = split_rows(str(csv), rows, 0.25, seed=1)
    tr2, te2, _ = split_rows(str(csv), rows, 0.25, seed=1)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    spk_tr = {rows[i].file.split("/")[0] for i in tr}
    spk_te = {rows[i].file.split("/")[0] for i in te}
    assert len(spk_te) == 2 and not spk_tr & spk_te and "held-out" in desc
