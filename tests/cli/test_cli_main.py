import json
import subprocess
import sys

from sepkit.cli import main


def test_demo_fast_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    code = main(["demo", "--fast", "--layers", "1", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "MCC (Pearson) on 3 sources" in text
    assert "iVAE" in text and "FastICA" in text
    rows = json.loads(out.read_text())
    assert rows[0]["n_layers"] == 1
    # Linear mixing of non-stationary sources: both iVAE and FastICA succeed.
    assert rows[0]["ivae"] > 0.8 and rows[0]["fastica"] > 0.8


def test_bad_argument_gives_one_line_error(capsys):
    code = main(["demo", "--fast", "--layers", "one"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "sepkit demo: error: --layers must be comma-separated integers such as '1,3', got 'one'."
    )


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "sepkit", "--version"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0 and res.stdout.startswith("sepkit ")
