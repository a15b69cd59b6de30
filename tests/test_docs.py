"""The documented commands run as written from a fresh clone.

Every ``python recipes/...`` / ``python benchmarks/...`` command of the tracked
Markdown files and of the usage lines of the scripts names a script that exists,
a ``--config`` that exists relative to the repository root (where the commands
and ``sepkit recipes run`` are run from), and only options the script defines.
Nothing points at our development machines: not their thread-pinning wrapper,
no ``/work/`` or ``/tmp/`` path in a documented command. The ``sepkit ...``
lines of README.md use only subcommands and options the command line has.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Written in two parts so that this file does not match itself.
WRAPPER = "cpu" + "-slot"

# A documented command of a script: "python recipes/<name>/run.py ARGS" up to a
# comment, the end of an inline code span or the end of the (logical) line.
_COMMAND = re.compile(
    r"(?:^|[\s`(])python3?\s+(?P<script>(?:recipes|benchmarks)/[a-z0-9_./-]+\.py)(?P<args>[^`#\n]*)"
)
# Paths of our machines that a fresh clone does not have.
_MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home)/")

# Scripts whose usage lines still break the rule; each needs the fix its reason names
# (their owners edit them). A strict xfail: the marker goes once the fix is in.
_PENDING: dict[str, str] = {}


def _git_files(*suffixes: str) -> list[str] | None:
    """The tracked files with these suffixes; None outside a git checkout (an sdist)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return sorted(p for p in out.split("\0") if p.endswith(suffixes) and (ROOT / p).is_file())


def _tracked(*suffixes: str) -> list[str]:
    files = _git_files(*suffixes)
    if files is None:
        pytest.skip("not a git checkout: the tracked files are unknown")
    return files


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with shell continuations (a trailing backslash) joined."""
    lines, start, parts = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        start = number if start is None else start
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped.rstrip("\\"))
            continue
        lines.append((start, " ".join([*parts, line])))
        start, parts = None, []
    if parts:
        lines.append((start, " ".join(parts)))
    return lines


def _commands(path: str) -> list[tuple[int, str, list[str]]]:
    """(line, script, arguments) of each documented script command in ``path``."""
    found = []
    for number, line in _logical_lines((ROOT / path).read_text(encoding="utf-8")):
        for match in _COMMAND.finditer(line):
            args = match["args"].strip().rstrip(".,;:)")
            try:
                words = shlex.split(args)
            except ValueError:  # an unbalanced quote inside prose
                words = args.split()
            found.append((number, match["script"], words))
    return found


def _options_of(script: Path) -> set[str]:
    """The long options a script (and, for a recipe, the shared recipe parser) defines."""
    text = script.read_text(encoding="utf-8")
    if script.parts[-3] == "recipes" or "recipe_parser" in text:
        text += (ROOT / "sepkit" / "_recipe.py").read_text(encoding="utf-8")
    return set(re.findall(r"""["'](--[a-z][\w-]*)["']""", text))


def _problems(path: str) -> list[str]:
    problems = []
    for number, script, words in _commands(path):
        where = f"{path}:{number}: python {script}"
        target = ROOT / script
        if not target.is_file():
            problems.append(f"{where}: {script} does not exist")
            continue
        known = _options_of(target)
        for i, word in enumerate(words):
            if _MACHINE_PATH.search(word):
                problems.append(f"{where}: {word!r} is a path of our machines")
            name = word.split("=", 1)[0]
            if not re.fullmatch(r"--[a-z][\w-]*", name):
                continue  # a value, or a --section.key=value config override
            if name not in known:
                problems.append(f"{where}: {script} has no option {name}")
            if name == "--config":
                value = word.split("=", 1)[1] if "=" in word else (words[i + 1 :] or [""])[0]
                if "<" not in value and not (ROOT / value).is_file():  # <kind>: a placeholder
                    problems.append(
                        f"{where}: --config {value} does not exist relative to the repository root"
                    )
    return problems


def test_no_file_mentions_the_development_wrapper():
    hits = [
        f"{path}:{number}"
        for path in _tracked(".md", ".py")
        for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1)
        if WRAPPER in line
    ]
    assert not hits, (
        f"{WRAPPER} exists only on our development machines; pin threads with "
        f"OMP_NUM_THREADS=1 or torch.set_num_threads(1) instead: {', '.join(hits)}"
    )


def test_markdown_has_no_paths_of_our_machines():
    hits = [
        f"{path}:{number}: {line.strip()}"
        for path in _tracked(".md")
        for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1)
        if _MACHINE_PATH.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_markdown_commands_name_existing_scripts_configs_and_options():
    paths = _tracked(".md")
    assert any(_commands(p) for p in paths), "no documented command found: the parser broke"
    problems = [problem for path in paths for problem in _problems(path)]
    assert not problems, "\n".join(problems)


def _script_files() -> list:
    files = _git_files(".py") or []  # collection time: no skip outside a test
    paths = [p for p in files if p.startswith(("recipes/", "benchmarks/", "sepkit/"))]
    return [
        pytest.param(p, marks=pytest.mark.xfail(reason=_PENDING[p], strict=True))
        if p in _PENDING
        else p
        for p in paths
        if _commands(p)
    ]


@pytest.mark.parametrize("path", _script_files())
def test_usage_lines_of_scripts_run_from_the_repository_root(path):
    problems = _problems(path)
    assert not problems, "\n".join(problems)


def test_parser_reads_commands_and_flags_mistakes(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```\n"
        "OMP_NUM_THREADS=1 python recipes/synthetic/run.py --config \\\n"
        "    recipes/synthetic/conf/tiny.toml --stage 3 --model.n_steps=10   # ok\n"
        "python recipes/nope/run.py\n"
        "python recipes/synthetic/run.py --config conf/tiny.toml --exp /tmp/x --bogus\n"
        "```\n"
    )
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "sepkit").symlink_to(ROOT / "sepkit")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert [c[1] for c in _commands("doc.md")] == ["recipes/synthetic/run.py"] + [
        "recipes/nope/run.py",
        "recipes/synthetic/run.py",
    ]
    problems = _problems("doc.md")
    assert problems == [
        "doc.md:4: python recipes/nope/run.py: recipes/nope/run.py does not exist",
        "doc.md:5: python recipes/synthetic/run.py: --config conf/tiny.toml does not exist "
        "relative to the repository root",
        "doc.md:5: python recipes/synthetic/run.py: '/tmp/x' is a path of our machines",
        "doc.md:5: python recipes/synthetic/run.py: recipes/synthetic/run.py has no option --bogus",
    ]


def _readme_sepkit_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            lines += [part.strip() for part in line.split(" | ") if part.strip()]
    return [line for line in lines if line.startswith("sepkit ")]


def test_readme_sepkit_lines_use_existing_subcommands_and_options():
    from sepkit.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    lines = _readme_sepkit_lines()
    assert len(lines) >= 8
    problems = []
    for line in lines:
        words = line.replace("[", " ").replace("]", " ").split()
        sub = commands.get(words[1])
        if sub is None:
            problems.append(f"{line}: no subcommand {words[1]!r}")
            continue
        for word in words[2:]:
            if word.startswith("-") and word.split("=")[0] not in sub._option_string_actions:
                problems.append(f"{line}: sepkit {words[1]} has no option {word}")
    assert not problems, "\n".join(problems)


def _readme_use_snippet() -> str:
    use = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Use\n", 1)[1]
    return re.search(r"```python\n(.*?)```", use, flags=re.S).group(1)


def test_readme_first_snippet_is_nonlinear_and_runs_twice(tmp_path, monkeypatch, capsys):
    import ast
    from dataclasses import fields

    from sepkit import IVAESeparator
    from sepkit.methods.flow import FlowConfig
    from sepkit.separator import _constructor_defaults

    flow_fields = [f.name for f in fields(FlowConfig)]
    code = _readme_use_snippet()
    # Under a headline about nonlinear mixing: a mixing MLP of more than one layer
    # (n_layers=1 is a linear mixing).
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "make_nonlinear_ica"
    )
    given = {k.arg: k.value for k in call.keywords}
    n_layers = given["n_layers"] if "n_layers" in given else call.args[3]
    assert ast.literal_eval(n_layers) > 1
    # Run as written, twice in the same folder (a user re-running it), with short
    # training: the second save must replace the first instead of refusing.
    monkeypatch.setitem(IVAESeparator.__init__.__kwdefaults__, "n_steps", 20)
    # The snippet's square array goes to the flow family: shorten its defaults too.
    short = FlowConfig(n_steps=20, n_coupling=2)
    monkeypatch.setattr(
        FlowConfig.__init__, "__defaults__", tuple(getattr(short, f) for f in flow_fields)
    )
    monkeypatch.chdir(tmp_path)
    # The estimator caches its defaults: the patched one must not outlive this test.
    _constructor_defaults.cache_clear()
    try:
        for _ in range(2):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        _constructor_defaults.cache_clear()
    assert (tmp_path / "sep.safetensors").is_file()
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(0.0 <= float(v) <= 1.0 for v in printed)


@pytest.mark.parametrize(
    "module",
    [
        "sepkit.windows",
        "sepkit.artifacts",
        "sepkit.dropin_sklearn",
        "sepkit.datasets.audio",
        "sepkit.datasets.eeg",
        "sepkit.datasets.nonlinear_ica",
        "sepkit.cli",
        "sepkit.cli.train",
        "sepkit.separator",
        "sepkit.io.recording",
        "sepkit.io.audio",
        "sepkit.metrics",
    ],
)
def test_docstring_examples_run(module):
    # The examples in the docstrings (those not marked +SKIP, which need files) are
    # run, so that they cannot drift from the code unnoticed.
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
