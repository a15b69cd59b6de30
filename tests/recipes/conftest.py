"""Shared helpers of the recipe tests: load a recipe's run.py as a module."""

import importlib.util
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture
def load_recipe():
    """``load_recipe(name)``: recipes/<name>/run.py, imported fresh as a module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_run", RECIPES / name / "run.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
