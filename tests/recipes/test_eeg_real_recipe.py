import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "eeg_real"
RECORDING = ROOT.parent / "shared" / "data" / "eeg" / "eeglab" / "eeglab_data.set"


@pytest.mark.shared_data
def test_tiny_recipe_finds_the_same_blink_as_picard(tmp_path, load_recipe):
    if not RECORDING.exists():
        pytest.skip(f"{RECORDING} is absent (needs ../shared/data beside the project)")
    run = load_recipe("eeg_real")
    code = run.main(["--config", str(RECIPE / "conf" / "tiny.toml"), "--exp", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["method"]: r for r in results["methods"]}
    # Both find a frontal component that follows FPz (measured 0.878 / 0.881).
    assert rows["sepkit"]["abs_r_blink_vs_blink_ref"] > 0.8
    assert rows["picard"]["abs_r_blink_vs_blink_ref"] > 0.8
    agree = {a["method"]: a for a in results["agreement"]["methods"]}
    assert sorted(agree) == ["picard", "sepkit-pnl"]
    # The post-nonlinear model, fitted on the unfiltered file with the band
    # inside, finds the same blink (the amplifiers here do not clip).
    assert agree["sepkit-pnl"]["abs_r_components"] > 0.99
    assert rows["sepkit-pnl"]["abs_r_blink_vs_blink_ref"] > 0.8
    agree = agree["picard"]
    # The same component: its time courses agree far above any other pair.
    assert agree["abs_r_components"] > 0.9
    low, high = agree["ci95"]
    assert low <= agree["abs_r_difference"] <= high
    spread = results["ica_seed_spread"]["picard"]
    assert spread["seeds"] == [0, 1] and all(0.8 < r <= 1.0 for r in spread["abs_r"])
    assert "95 % block bootstrap" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "blink_topographies.png").is_file()


def test_absent_recording_skips_cleanly(tmp_path, capsys, load_recipe):
    run = load_recipe("eeg_real")
    code = run.main(
        [
            "--config",
            str(RECIPE / "conf" / "tiny.toml"),
            "--exp",
            str(tmp_path),
            '--data.path="no/such/file.set"',
        ]
    )
    assert code == 0
    assert "[skip]" in capsys.readouterr().out and not (tmp_path / "results.json").exists()
