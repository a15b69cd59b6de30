from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "audio_bss"
TINY = RECIPE / "conf" / "tiny.toml"


def test_missing_speech_says_how_to_use_own_files(tmp_path, load_recipe):
    run = load_recipe("audio_bss")
    with pytest.raises(SystemExit, match=r"skipped: 4 speech file\(s\) missing.*--data.audio_dir"):
        run.main(["--config", str(TINY), "--exp", str(tmp_path), f'--data.audio_dir="{tmp_path}"'])


def test_unknown_override_is_an_error(tmp_path, load_recipe):
    run = load_recipe("audio_bss")
    with pytest.raises(SystemExit, match="unknown config key 'data.nope'"):
        run.main(["--config", str(TINY), "--exp", str(tmp_path), "--data.nope=1"])


@pytest.mark.shared_data
def test_one_room_fit_and_report(tmp_path, load_recipe):
    run = load_recipe("audio_bss")
    cfg = run.load_config(TINY, [])
    if not run.audio_dir(cfg).is_dir():
        pytest.skip("../shared/data/audio is absent")
    args = ["--config", str(TINY), "--exp", str(tmp_path), "--data.duration=2.0"]
    args += ['--data.conditions=["room0.15"]', '--methods.names=["ivae", "auxiva"]']
    assert run.main(args) == 0
    table = (tmp_path / "results.md").read_text()
    assert "| 2x2 | room0.15 |" in table and "| ivae |" in table and "| auxiva |" in table


def test_flow_runs_on_instantaneous_mixtures_only(load_recipe):
    run = load_recipe("audio_bss")
    assert run.applies("ivae_flow", "tanh") and run.applies("ivae_flow", "inst")
    assert not run.applies("ivae_flow", "room0.15")
