import json
from pathlib import Path

import mne
import numpy as np
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
    locked = {m["method"]: m for m in results["blink_locked"]["methods"]}
    assert results["blink_locked"]["n_blinks"] >= 10  # 15 clear blinks on FPz
    for key, (low, high) in locked["picard"]["ci95_vs_first"].items():
        diff = locked["picard"][key] - locked["sepkit"][key]
        assert low <= diff <= high, key
    assert all(0 < m["blink_free_variance_changed_frontal"] < 0.2 for m in locked.values())
    assert all(0 < m["blink_variance_left_frontal"] < 0.6 for m in locked.values())
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


def _blinky_raw(sample_rate=100.0, seconds=60.0, onsets=None):
    """Noise on three frontal channels plus a 200 uV blink every 4 s (or at ``onsets``).

    Returns the Raw and the blinks alone, shape (3, n_times).
    """
    rng = np.random.default_rng(0)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    blinks = np.zeros((3, n))
    for onset in np.arange(2.0, seconds - 2.0, 4.0) if onsets is None else onsets:
        blinks += (
            200e-6 * np.exp(-0.5 * ((t - onset) / 0.08) ** 2) * np.array([[1.0], [0.6], [0.5]])
        )
    info = mne.create_info(["FPz", "F3", "F4"], sample_rate, "eeg")
    return mne.io.RawArray(rng.normal(0, 10e-6, (3, n)) + blinks, info, verbose="error"), blinks


def _blink_cfg(frontal, bootstrap_block, bootstrap_n):
    """The recipe's config keys that blink_locked reads."""
    return dict(
        data=dict(frontal=frontal, blink_ref="FPz"),
        experiment=dict(
            seed=0,
            bootstrap_block=bootstrap_block,
            bootstrap_n=bootstrap_n,
            blink_threshold=5.0,
            blink_window=[-0.25, 0.35],
            blink_free_margin=0.75,
        ),
    )


def test_blink_locked_scores_are_hand_computable(load_recipe):
    run = load_recipe("eeg_real")
    raw, blinks = _blinky_raw()
    cfg = _blink_cfg(["FPz", "F3", "F4"], bootstrap_block=10.0, bootstrap_n=50)
    # Nothing removed, everything removed, and the blinks alone removed.
    onsets = np.arange(2.0, 58.0, 4.0)
    clean = mne.io.RawArray(raw.get_data() - blinks, raw.info)
    empty = mne.io.RawArray(np.zeros_like(raw.get_data()), raw.info)
    rows = [
        dict(method=m, _cleaned=c) for m, c in [("same", raw), ("zero", empty), ("clean", clean)]
    ]
    out = run.blink_locked(rows, raw, cfg)
    assert out["n_blinks"] == len(onsets)
    same, zero, clean_row = out["methods"]
    assert same["blink_free_variance_changed_frontal"] == 0.0
    assert same["blink_variance_left_frontal"] == pytest.approx(1.0)
    assert same["blink_average_left"] == pytest.approx(1.0)
    assert zero["blink_free_variance_changed_frontal"] == pytest.approx(1.0)
    assert zero["blink_variance_left_frontal"] == 0.0 and zero["blink_average_left"] == 0.0
    # Removing the blink leaves the blink-free samples (where the Gaussian
    # bumps are below 1e-11 of their peak) unchanged.
    assert clean_row["blink_free_variance_changed_frontal"] < 1e-6
    assert clean_row["blink_variance_left_frontal"] < 0.05
    assert "ci95_vs_first" not in same
    low, high = zero["ci95_vs_first"]["blink_free_variance_changed_frontal"]
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_blink_locked_needs_two_blinks(load_recipe):
    run = load_recipe("eeg_real")
    raw, _ = _blinky_raw(seconds=20.0, onsets=[10.0])
    cfg = _blink_cfg(["FPz"], bootstrap_block=1.0, bootstrap_n=10)
    assert run.blink_locked([dict(method="same", _cleaned=raw)], raw, cfg) == {"n_blinks": 1}
