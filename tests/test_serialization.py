"""Files written by earlier releases load and give the same outputs.

tests/data/format1/ holds separators of every family saved by the code before
the methods/ refactor (format 1), with the outputs that code gave
(make_fixtures.py there wrote both); the shipped pretrained models are checked
on a fixed input the same way.
"""

from pathlib import Path

import numpy as np
import pytest

from sepkit import IVAESeparator

HERE = Path(__file__).parent / "data" / "format1"
FAMILIES = ["network", "network_labels", "linear", "gengauss", "post_nonlinear", "tf"]
SHIPPED = ["ivae-synthetic-5src-v1", "ivae-eeg1020-256hz-v1", "ivae-audio-2mic-16khz-v1"]


def _inputs(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", HERE / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, rec, u = mod.cases()[name]
    return rec, u


@pytest.mark.parametrize("name", FAMILIES)
def test_format1_files_give_the_same_outputs(name):
    sep = IVAESeparator.load(HERE / f"{name}.safetensors", device="cpu")
    expected = np.load(HERE / f"{name}_expected.npz")
    rec, u = _inputs(name)
    S = sep.transform(rec, u).data
    scale = np.abs(expected["sources"]).max()
    np.testing.assert_allclose(S[:, ::16], expected["sources"], rtol=1e-5, atol=1e-6 * scale)
    rebuilt = sep.inverse_transform(S, u)[:, ::16]
    scale = np.abs(expected["reconstruction"]).max()
    np.testing.assert_allclose(rebuilt, expected["reconstruction"], rtol=1e-5, atol=1e-6 * scale)
    if "components" in expected:
        np.testing.assert_allclose(sep.get_components(), expected["components"], rtol=1e-5)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_give_the_same_outputs(name):
    sep = IVAESeparator.from_pretrained(name, device="cpu")
    expected = np.load(HERE / f"{name}_expected.npz")
    # Float32 sums in another order (thread count) move the last digits: compare at
    # 1e-6 of the largest source value, far below any change of the model.
    scale = np.abs(expected["sources"]).max()
    np.testing.assert_allclose(
        sep.transform(expected["X"]), expected["sources"], rtol=1e-5, atol=1e-6 * scale
    )
    np.testing.assert_allclose(sep.get_components(), expected["components"], rtol=1e-5, atol=1e-9)
