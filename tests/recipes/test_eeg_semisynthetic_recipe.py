import json
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "eeg_semisynthetic"


def test_tiny_recipe_runs_all_stages(tmp_path, load_recipe):
    run = load_recipe("eeg_semisynthetic")
    code = run.main(
        [
            "--config",
            str(RECIPE / "conf" / "tiny.toml"),
            "--exp",
            str(tmp_path),
            '--data.cases=["saturation"]',
            "--data.duration=30.0",
            '--experiment.methods=["sepkit", "sepkit-hp", "sepkit-pnl", "picard"]',
        ]
    )
    assert code == 0
    stem = tmp_path / "data" / "standard_1020_saturation_seed0"
    # The post-nonlinear model gets the unfiltered recording (it filters after
    # its unwarping); the others the high-passed one.
    assert Path(f"{stem}_unfiltered_raw.fif").is_file() and Path(f"{stem}_raw.fif").is_file()
    table = (tmp_path / "results.md").read_text()
    for method in ("sepkit", "sepkit-hp", "sepkit-pnl", "picard"):
        assert f"| saturation | 19 | 6 | {method} |" in table
        row = json.loads(
            (tmp_path / "fits" / f"{method}_standard_1020_saturation_seed0.json").read_text()
        )
        # Sources are scored against the filtered truth: far above chance for all.
        assert row["mcc"] > 0.6, (method, row["mcc"])
        # make_eeg's default kinds, in order, each with the |r| of its match.
        assert row["source_kinds"][:2] == ["alpha", "blink"]
        assert len(row["per_source_abs_r"]) == len(row["source_kinds"]) == 6
        assert min(row["per_source_abs_r"]) >= 0.0 and max(row["per_source_abs_r"]) <= 1.0
    assert "Median abs r of the matched estimate per source kind" in table
    assert "| saturation | sepkit-pnl | " in table
    assert "| saturation | sepkit - picard | " in table
    # The defaults with the filter inside tried the unwarping and kept it (clipped
    # sensors); the plain defaults did not try it.
    hp = json.loads(
        (tmp_path / "fits" / "sepkit-hp_standard_1020_saturation_seed0.json").read_text()
    )
    plain = json.loads(
        (tmp_path / "fits" / "sepkit_standard_1020_saturation_seed0.json").read_text()
    )
    assert hp["mixing"] == "post-nonlinear" and hp["sensor_nonlinearity_max"] >= 0.08
    assert plain["mixing"] == "linear" and plain["sensor_nonlinearity_max"] is None
    assert "| saturation | post-nonlinear 1 | " in table


def test_unknown_method_is_an_error(tmp_path, load_recipe):
    run = load_recipe("eeg_semisynthetic")
    with pytest.raises(SystemExit, match="unknown method 'sepkit-pln'; allowed: sepkit, "):
        run.main(
            ["--config", str(RECIPE / "conf" / "tiny.toml"), '--experiment.methods=["sepkit-pln"]']
        )


def test_paired_kind_table_pairs_the_same_sources(load_recipe):
    run = load_recipe("eeg_semisynthetic")
    cfg = {
        "data": {"cases": ["linear"]},
        "experiment": {"methods": ["sepkit", "picard"], "seeds": [0, 1]},
    }

    def row(method, seed, r):
        return dict(
            method=method,
            montage="biosemi32",
            case="linear",
            seed=seed,
            source_kinds=["blink", "ecg", "blink"],
            per_source_abs_r=r,
        )

    rows = [
        row("sepkit", 0, [0.99, 0.40, 0.95]),
        row("picard", 0, [0.98, 0.45, 0.96]),
        row("sepkit", 1, [0.97, 0.50, 0.90]),
        row("picard", 1, [0.90, 0.50, 0.89]),
        row("picard", 2, [0.10, 0.10, 0.10]),  # seed 2 is not in the run, nor paired
    ]
    lines = run.paired_kind_table(cfg, rows)
    # blink differences: +0.01, -0.01, +0.07, +0.01 -> median +0.01, ahead on 3 of 4;
    # ecg: -0.05, 0.00 -> median -0.025, ahead on 0 of 2.
    assert "| case | methods | blink | ecg |" in lines
    assert "| linear | sepkit - picard | +0.0100 (3/4) | -0.0250 (0/2) |" in lines
    # Nothing to pair without an ICA method in the run.
    cfg["experiment"]["methods"] = ["sepkit"]
    assert run.paired_kind_table(cfg, rows) == []
