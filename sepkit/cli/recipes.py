"""``sepkit recipes``: list and run the recipes of a sepkit checkout.

Recipes live in recipes/<name>/run.py of the repository (they are not part of
the installed package): ``sepkit recipes list`` shows them, ``sepkit recipes
run NAME [ARGS...]`` runs ``python recipes/NAME/run.py ARGS...`` from the
repository root and returns its exit code.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

from . import plain_help


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recipes",
        help="list or run the recipes of a repository checkout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="one line per recipe")
    r = sub.add_parser("run", help="run a recipe (arguments after NAME go to its run.py)")
    r.add_argument("name", metavar="NAME")
    r.add_argument("recipe_args", nargs=argparse.REMAINDER, metavar="ARGS")
    return p


def recipes_dir() -> Path:
    """recipes/ of the checkout the package was imported from; a clear error if absent."""
    root = Path(__file__).resolve().parents[2]
    folder = root / "recipes"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no recipes/ folder beside the sepkit package (looked in {folder}). Recipes ship "
            "with the repository, not the installed package: clone it and install with "
            "'pip install -e .', then run sepkit from there."
        )
    return folder


def _recipes() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(recipes_dir().glob("*/run.py")) if p.parent.is_dir()}


# "(issue 4)", "(issue #6, benchmark 2)": our tracker's references, not for users.
_ISSUE_REF = re.compile(r"\s*\((?:see )?issues? #?\d+[^)]*\)", re.I)


def _summary(path: Path) -> str:
    """The first line of a run.py's docstring, without issue references or reST markup."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except SyntaxError:
        return "(run.py does not parse)"
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return plain_help(_ISSUE_REF.sub("", first))


def run(args) -> int:
    recipes = _recipes()
    if args.action == "list":
        if not recipes:
            print(f"no recipes in {recipes_dir()}")
            return 0
        width = max(len(n) for n in recipes)
        for name, path in recipes.items():
            print(f"{name:<{width}}  {_summary(path)}")
        return 0
    if args.name not in recipes:
        raise ValueError(
            f"unknown recipe {args.name!r}; available: {', '.join(recipes) or '(none)'}."
        )
    path = recipes[args.name]
    # The recipe runs from the repository root (its configs name data from there),
    # so the paths the user gives are made absolute here, from where they typed them.
    cmd = [sys.executable, str(path), *_absolute_paths(args.recipe_args, path.parent)]
    return subprocess.call(cmd, cwd=path.parents[2])


# The recipe runners' options that take a path (sepkit._recipe.recipe_parser, and
# recipes/pretrained's --export-root).
_PATH_OPTIONS = ("--config", "--exp", "--export-root")


def _absolute_paths(argv: list[str], recipe_dir: Path) -> list[str]:
    """``argv`` with the values of ``_PATH_OPTIONS`` made absolute against the cwd.

    A ``--config`` that is no file from the cwd but is one in the recipe's folder
    (``--config conf/eeg.toml``, as its README writes it) is taken from there.
    """
    out, option = [], None
    for item in argv:
        if option is not None:
            item, option = _absolute(option, item, recipe_dir), None
        elif item in _PATH_OPTIONS:
            option = item
        elif item.split("=", 1)[0] in _PATH_OPTIONS and "=" in item:
            name, value = item.split("=", 1)
            item = f"{name}={_absolute(name, value, recipe_dir)}"
        out.append(item)
    return out


def _absolute(option: str, value: str, recipe_dir: Path) -> str:
    path = Path(value).expanduser()
    if option == "--config" and not path.is_file() and (recipe_dir / path).is_file():
        return str(recipe_dir / path)
    return str(path.absolute())
