"""sepkit._recipe: config overrides, machine line and stage loop of the run scripts."""

import platform

import numpy as np
import pytest
import torch

from sepkit._recipe import (
    hardware,
    load_config,
    make_synthetic_data,
    mne_ica,
    recipe_parser,
    run_stages,
)

CONF = """
[data]
n_sources = 3
seeds = [0, 1]

[model]
lr = 0.001
name = "ivae"

[sepkit]
n_steps = 10
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONF)
    return path


def test_overrides_are_parsed_as_toml_values(conf):
    cfg = load_config(
        conf,
        ["--data.seeds=[4,5,6]", "--model.lr=3e-4", '--model.name="vae"', "--data.n_sources=2"],
    )
    assert cfg["data"] == {"n_sources": 2, "seeds": [4, 5, 6]}
    assert cfg["model"] == {"lr": 3e-4, "name": "vae"}
    assert cfg["sepkit"] == {"n_steps": 10}


def test_a_bare_word_is_text_only_where_the_file_holds_text(conf):
    cfg = load_config(conf, ["--model.name=ivae-speech-16k-v2"])
    assert cfg["model"]["name"] == "ivae-speech-16k-v2"
    with pytest.raises(
        SystemExit,
        match=r"override --data\.seeds='\[0, 1' is not a TOML value .*--data\.seeds=\[0, 1\]",
    ):
        load_config(conf, ["--data.seeds=[0, 1"])
    with pytest.raises(SystemExit, match=r"override --model\.lr='1e-3x' is not a TOML value"):
        load_config(conf, ["--model.lr=1e-3x"])


def test_no_overrides_gives_the_file(conf):
    assert load_config(conf, []) == {
        "data": {"n_sources": 3, "seeds": [0, 1]},
        "model": {"lr": 0.001, "name": "ivae"},
        "sepkit": {"n_steps": 10},
    }


def test_unknown_key_is_an_error_listing_the_known_keys(conf):
    known = "data.n_sources, data.seeds, model.lr, model.name, sepkit.n_steps"
    with pytest.raises(
        SystemExit, match=f"unknown config key 'model.n_step'; known keys: {known}$"
    ):
        load_config(conf, ["--model.n_step=3"])
    with pytest.raises(SystemExit, match="unknown config key 'train.lr'"):
        load_config(conf, ["--train.lr=3"])


@pytest.mark.parametrize("item", ["model.lr=3", "--model.lr"])
def test_malformed_override_is_an_error(conf, item):
    with pytest.raises(SystemExit, match=r"must look like --section\.key=value"):
        load_config(conf, [item])


def test_sections_limit_what_may_be_overridden(conf):
    cfg = load_config(conf, ["--model.lr=0.5"], sections=("data", "model"))
    assert cfg["model"]["lr"] == 0.5
    with pytest.raises(
        SystemExit,
        match="unknown config key 'sepkit.n_steps'; known keys: "
        "data.n_sources, data.seeds, model.lr, model.name$",
    ):
        load_config(conf, ["--sepkit.n_steps=5"], sections=("data", "model"))


def test_extra_keys_may_be_set_and_others_still_fail(conf):
    cfg = load_config(conf, ["--sepkit.lr=0.1"], extra_keys={"sepkit": {"lr", "n_steps"}})
    assert cfg["sepkit"] == {"n_steps": 10, "lr": 0.1}
    with pytest.raises(SystemExit, match=r"known keys: .*sepkit\.n_steps \(and more\)$"):
        load_config(
            conf,
            ["--sepkit.bogus=1"],
            extra_keys={"sepkit": {"lr"}},
            extra_hint=" (and more)",
        )
    # extra keys of one section do not open another
    with pytest.raises(SystemExit, match="unknown config key 'model.lr2'"):
        load_config(conf, ["--model.lr2=1"], extra_keys={"sepkit": {"lr2"}})


def test_hardware_names_torch_threads_and_gpu():
    text = hardware()
    assert f"torch {torch.__version__}" in text
    assert f"{torch.get_num_threads()} torch thread(s)" in text
    assert "cores" in text
    if not torch.cuda.is_available():
        assert text.endswith(", no GPU")
    # a CPU device: the timings used no GPU, so none is named
    assert not hardware("cpu").endswith("no GPU")
    assert hardware("cpu") in text
    assert hardware(python=True).endswith(f"Python {platform.python_version()}")


def test_stage_loop_runs_the_chosen_stages(tmp_path, conf):
    calls = []

    def stage(n):
        return lambda cfg, exp, *extra: calls.append((n, cfg["model"]["lr"], exp, extra))

    parser = recipe_parser("doc", tmp_path, n_stages=3)
    parser.add_argument("--only", default=None)
    stages = {1: stage(1), 2: stage(2), 3: stage(3)}
    argv = ["--config", str(conf), "--stage", "2", "--model.lr=0.5", "--only", "x"]
    assert (
        run_stages(parser, stages, tmp_path, argv, load=load_config, extra=lambda a: (a.only,)) == 0
    )
    exp = tmp_path / "exp" / "tiny"
    assert calls == [(2, 0.5, exp, ("x",)), (3, 0.5, exp, ("x",))]
    calls.clear()
    argv = ["--config", str(conf), "--exp", str(tmp_path / "e"), "--stop-stage", "1"]
    run_stages(parser, stages, tmp_path, argv, load=load_config)
    assert calls == [(1, 0.001, tmp_path / "e", ())]
    with pytest.raises(SystemExit, match="unknown config key 'model.x'"):
        run_stages(
            parser, stages, tmp_path, ["--config", str(conf), "--model.x=1"], load=load_config
        )
    # A config that is not there: one line naming it, not a traceback.
    missing = tmp_path / "nope.toml"
    with pytest.raises(SystemExit, match=rf"^--config {missing}: no such file\. Pass the path"):
        run_stages(parser, stages, tmp_path, ["--config", str(missing)], load=load_config)


def test_synthetic_data_reads_the_data_section():
    from sepkit.datasets import make_nonlinear_ica

    d = dict(n_sources=2, n_segments=5, n_per_segment=20, activation="xtanh")
    d |= dict(std_range=[0.5, 3.0], centered=False)
    X, S, u = make_synthetic_data(d, 2, 7)
    X2, S2, u2 = make_nonlinear_ica(
        2, 5, 20, 2, activation="xtanh", std_range=(0.5, 3.0), mean_range=(-1.0, 1.0),
        random_state=7,
    )  # fmt: skip
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(S, S2)
    np.testing.assert_array_equal(u, u2)
    X3, _, _ = make_synthetic_data(d | dict(centered=True), 2, 7)
    assert not np.array_equal(X, X3)


def test_mne_ica_is_set_up_as_the_baselines_run_it():
    pytest.importorskip("mne")
    ica = mne_ica("infomax", 4, 3)
    assert (ica.method, ica.n_components, ica.random_state) == ("infomax", 4, 3)
    assert ica.fit_params["extended"] is True
    assert mne_ica("picard", 4, 3).method == "picard"
    with pytest.raises(KeyError, match="jade"):
        mne_ica("jade", 4, 3)


def test_stage_numbers_outside_the_recipe_s_are_refused(tmp_path):
    # Audit: --stage 0 was a KeyError traceback, --stage 9 ran nothing and exited 0.
    from sepkit._recipe import load_config, recipe_parser, run_stages

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "default.toml").write_text("[data]\nx = 1\n")
    ran = []
    stages = {1: lambda cfg, exp: ran.append(1), 2: lambda cfg, exp: ran.append(2)}
    parser = recipe_parser("doc", tmp_path, n_stages=2)
    for argv in (["--stage", "0"], ["--stage", "9"], ["--stage", "2", "--stop-stage", "1"]):
        with pytest.raises(SystemExit, match=r"the stages are 1 to 2, and --stage must not come"):
            run_stages(parser, stages, tmp_path, argv, load=load_config)
    assert ran == []
    assert run_stages(parser, stages, tmp_path, ["--stage", "2"], load=load_config) == 0
    assert ran == [2]
