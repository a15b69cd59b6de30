import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "eeg_artifacts"


def test_tiny_recipe_removes_the_artifacts(tmp_path, load_recipe):
    run = load_recipe("eeg_artifacts")
    code = run.main(["--config", str(RECIPE / "conf" / "tiny.toml"), "--exp", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert sorted((r["case"], r["method"]) for r in rows) == sorted(
        (c, m) for c in ("linear", "saturation") for m in ("sepkit", "sepkit-pnl", "picard")
    )
    for r in rows:
        assert r["n_eog"] == 2 and r["n_ecg"] == 1  # make_eeg's blink, saccade and ECG
        assert r["ecg_found"] == 1 and r["eog_found"] >= 1  # the heart and the blink
        # Cleaning brings the EEG closer to the artifact-free recording.
        assert r["rrmse_after"] < 0.7 * r["rrmse_before"] and r["cc_after"] > 0.95
    linear = [r for r in rows if r["case"] == "linear"]
    # Linear mixing: removing the matched components leaves little but sensor noise.
    assert all(r["rrmse_oracle"] < 0.15 for r in linear)
    text = (tmp_path / "results.md").read_text()
    assert "| case | method | recordings | EOG found |" in text and "Hardware:" in text
    # A second run finds everything done and reports the same.
    assert run.main(["--config", str(RECIPE / "conf" / "tiny.toml"), "--exp", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows


def test_reference_leads_follow_their_sources(load_recipe):
    run = load_recipe("eeg_artifacts")
    rng = np.random.default_rng(0)
    kinds = ["alpha", "blink", "nonstationary", "muscle", "saccade", "ecg"]
    S = rng.standard_normal((6, 5000)) * np.arange(1, 7)[:, None]
    d = dict(eog_brain=0.3, eog_noise=0.1, ecg_noise=0.05)
    eog, ecg = run.reference_leads(S, kinds, d, seed=0)
    assert np.isclose(eog.std(), 100e-6) and np.isclose(ecg.std(), 1e-3)
    r = np.corrcoef(np.vstack([S, eog, ecg]))
    # Two unit-variance eye sources share the EOG lead; brain at 0.3 of their RMS.
    assert 0.6 < abs(r[-2, 1]) < 0.72 and 0.6 < abs(r[-2, 4]) < 0.72
    assert abs(r[-1, 5]) > 0.99 and abs(r[-1, :5]).max() < 0.05
