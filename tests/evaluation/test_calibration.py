"""Prior-weighted logistic-regression calibration."""

import json

import numpy as np
import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.calibration import Calibrator
from sslsv_sb.evaluation.metrics import act_dcf, cllr, min_dcf


def _gaussian_llr_data(n, seed, p_tar=0.3):
    """Targets ~ N(1, 1.5^2), non-targets ~ N(-1, 1.5^2): true LLR = (2 / 2.25) x."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < p_tar
    x = 1.5 * rng.normal(size=n) + np.where(y, 1.0, -1.0)
    return x, y


@pytest.mark.parametrize("p_target", [0.01, 0.5])
def test_recovers_known_affine_map(p_target):
    x, y = _gaussian_llr_data(50_000, 0)
    raw = 3.0 * x + 5.0  # miscalibrated scores; true LLR = a * raw + b
    a_true = 2.0 / 2.25 / 3.0
    b_true = -a_true * 5.0
    cal = Calibrator().fit(raw, y, p_target=p_target)
    assert cal.a == pytest.approx(a_true, rel=0.05)
    assert cal.b == pytest.approx(b_true, rel=0.05, abs=0.05)
    llr = cal.transform(raw)
    assert cllr(llr, y) < cllr(raw, y)
    # Calibrated at the Bayes threshold: actDCF close to minDCF.
    assert act_dcf(llr, y, 0.05)[0] < min_dcf(llr, y, 0.05)[0] + 0.03


def test_held_out_generalisation():
    x1, y1 = _gaussian_llr_data(20_000, 1)
    x2, y2 = _gaussian_llr_data(20_000, 2)
    cal = Calibrator().fit(10 * x1 - 4, y1, p_target=0.05)
    oracle = cllr(2.0 / 2.25 * x2, y2)  # true LLR of the held-out list
    assert cllr(cal.transform(10 * x2 - 4), y2) < oracle + 0.01
    assert cllr(10 * x2 - 4, y2) > oracle + 0.5


def test_save_load_roundtrip(tmp_path):
    x, y = _gaussian_llr_data(2000, 3)
    cal = Calibrator().fit(x, y, 0.05)
    path = cal.save(tmp_path / "cal.json")
    d = json.loads(path.read_text())
    assert set(d) == {"a", "b", "p_target"}
    back = Calibrator.load(path)
    assert np.allclose(back.transform(x), cal.transform(x))


def test_errors(tmp_path):
    with pytest.raises(RuntimeError, match="before fit"):
        Calibrator().transform([1.0])
    with pytest.raises(ValueError, match="target and non-target"):
        Calibrator().fit([1.0, 2.0], [1, 1])
    with pytest.raises(SSLSVError, match="not found"):
        Calibrator.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(SSLSVError, match="'a' and 'b'"):
        Calibrator.load(bad)
