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
    code = run.main(
        [
            "--config",
            str(RECIPE / "conf" / "tiny.toml"),
            "--exp",
            str(tmp_path),
            "--stop-stage",
            "2",
        ]
    )
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


@pytest.mark.shared_data
def test_tiny_dipolar_stage_scores_every_fit(tmp_path, load_recipe):
    if not RECORDING.exists():
        pytest.skip(f"{RECORDING} is absent (needs ../shared/data beside the project)")
    run = load_recipe("eeg_real")
    code = run.main(
        ["--config", str(RECIPE / "conf" / "tiny.toml"), "--exp", str(tmp_path), "--stage", "3"]
    )
    assert code == 0
    result = json.loads((tmp_path / "dipolar.json").read_text())
    assert result["rank"] == 29  # 30 EEG channels, average reference
    # sepkit, picard, pca; one seed on the recording and one resample each.
    assert len(result["rows"]) == 6
    for row in result["rows"]:
        assert len(row["rv"]) == 5 and all(0.0 <= rv <= 1.0 for rv in row["rv"])
        assert row["share_rv_below_5"] <= row["share_rv_below_10"]
        # Every method's sources lie in the span of the data's first 5 PCs.
        assert row["subspace_residual"] < 1e-6
    summary = {s["method"]: s for s in result["summary"]}
    # Below full rank MIR is measured against the whitened PCs: PCA's own is
    # 0 (up to rounding), the ICAs' is positive (measured 0.043-0.044 kbit/s).
    assert abs(summary["pca"]["mir_kbit_s"]["median"]) < 1e-6
    assert summary["sepkit"]["mir_kbit_s"]["min"] > 0.02
    assert summary["picard"]["mir_kbit_s"]["min"] > 0.02
    # Measured 80 % of maps below 10 % RV for both (one is the blink).
    assert summary["sepkit"]["share_rv_below_10"]["median"] >= 0.4
    for key in ("sepkit/5", "picard/5"):
        assert sum(result["iclabel"][key].values()) == 5
    assert "| sepkit | 5 | 2 |" in (tmp_path / "dipolar.md").read_text()


def test_block_resample_draws_whole_blocks(load_recipe):
    run = load_recipe("eeg_real")
    info = mne.create_info(["a", "b"], 10.0, "eeg")
    data = np.vstack([np.arange(200.0), -np.arange(200.0)])
    raw = mne.io.RawArray(data, info, verbose="error")
    out = run.block_resample(raw, 2.0, np.random.default_rng(0)).get_data()
    assert out.shape == (2, 200)  # 10 blocks of 20 samples
    blocks = out[0].reshape(10, 20)
    # Each block is a contiguous stretch of the recording, the same on both channels.
    assert np.all(np.diff(blocks, axis=1) == 1.0) and np.array_equal(out[1], -out[0])


def test_mir_baseline_full_rank_drops_one_average_referenced_channel(load_recipe):
    run = load_recipe("eeg_real")
    rng = np.random.default_rng(0)
    X = rng.laplace(size=(4, 2000))
    X -= X.mean(axis=0)  # average reference: rank 3
    B = run.mir_baseline(X, 3, 3)
    np.testing.assert_array_equal(B, np.eye(4)[:3])
    # Below full rank: the whitened first PCs.
    Y = run.mir_baseline(X, 2, 3) @ X
    np.testing.assert_allclose(np.cov(Y), np.eye(2), atol=1e-10)
