import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sepkit._recipe import make_synthetic_data
from sepkit.metrics import mcc

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
            "--tcl.n_steps=40",
        ]
    )
    assert code == 0
    table = (tmp_path / "results.md").read_text()
    for method in ("flow", "ivae", "vae", "fastica", "tcl (vs abs(s))"):
        assert f"| 1 | {method} |" in table
    assert len(list((tmp_path / "fits").glob("*.json"))) == 5


def test_unknown_override_is_an_error(tmp_path, load_recipe):
    run = load_recipe("synthetic")
    with pytest.raises(SystemExit, match="unknown config key 'model.n_step'"):
        run.main(["--config", str(RECIPE / "conf" / "tiny.toml"), "--model.n_step=3"])


def test_tcl_recovers_the_magnitude_of_linearly_mixed_sources():
    # One mixing layer, a short fit: TCL's features after FastICA follow |s|
    # (its sufficient statistic), not s, which its sign symmetry leaves unknown.
    spec = importlib.util.spec_from_file_location("synthetic_tcl", RECIPE / "tcl.py")
    tcl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tcl)
    data = dict(
        n_sources=2,
        n_segments=10,
        n_per_segment=400,
        activation="xtanh",
        std_range=[0.2, 3.0],
        centered=True,
    )
    X, S, u = make_synthetic_data(data, 1, 0)
    # One maxout layer can write |w_i^T x| exactly (max(a, -a)).
    Z = tcl.fit_tcl(X, u, 2, seed=0, n_hidden=16, n_layers=1, n_steps=800, batch_size=256, lr=0.03)
    assert Z.shape == S.shape
    assert mcc(np.abs(S), Z) > 0.95
    assert mcc(S, Z) < 0.5
