from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "synthetic"


def test_tiny_recipe_runs_all_stages(tmp_path, load_recipe):
    run = load_recipe("synthetic")
    code = run.main(
        [
            "--config",
            str(RECIPE / "conf" / "tiny.toml"),
            "--exp",
            str(tmp_path),
            "--experiment.n_layers=[1]",
            "--experiment.seeds=[0]",
            "--model.n_steps=60",
            "--flow.n_steps=40",
        ]
    )
    assert code == 0
    table = (tmp_path / "results.md").read_text()
    for method in ("flow", "ivae", "vae", "fastica"):
        assert f"| 1 | {method} |" in table
    assert len(list((tmp_path / "fits").glob("*.json"))) == 4


def test_unknown_override_is_an_error(tmp_path, load_recipe):
    run = load_recipe("synthetic")
    with pytest.raises(SystemExit, match="unknown config key 'model.n_step'"):
        run.main(["--config", str(RECIPE / "conf" / "tiny.toml"), "--model.n_step=3"])
