"""IVAESeparator(ica_init=...): the iVAE started from an ICA solution."""

import numpy as np
import pytest
import torch

from sepkit import IVAESeparator
from sepkit.methods.network import ica_matrices
from sepkit.metrics import mcc
from sepkit.models import IVAE

FAST = dict(n_steps=200, n_hidden=16, batch_size=128, device="cpu")


@pytest.fixture(scope="module")
def laplace_mix():
    """4 Laplace sources whose scale changes every 500 samples, linearly mixed."""
    rng = np.random.default_rng(0)
    n_times = 8000
    scales = rng.uniform(0.3, 2.0, size=(4, n_times // 500)).repeat(500, axis=1)
    S = rng.laplace(size=(4, n_times)) * scales
    A = rng.normal(size=(4, 4))
    return A @ S, S


def test_linear_path_starts_at_the_loaded_maps():
    torch.manual_seed(0)
    model = IVAE(3, 2, n_segments=4, n_hidden=8, linear_path=True)
    B, A = torch.randn(2, 3), torch.randn(3, 2)
    model.set_linear_path(B.numpy(), A.numpy())
    x, z = torch.randn(1, 3, 50), torch.randn(1, 2, 50)
    u = torch.zeros(1, 50, dtype=torch.long)
    mean, _ = model.encode(x, u)
    torch.testing.assert_close(mean, torch.einsum("sc,bct->bst", B, x))
    torch.testing.assert_close(model.decode(z), torch.einsum("cs,bst->bct", A, z))
    assert {"encoder_linear.weight", "decoder_linear.weight"} <= set(model.state_dict())
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        model.set_linear_path(np.zeros((3, 3)), A.numpy())


def test_default_model_has_no_linear_path():
    model = IVAE(3, 2, n_segments=4, n_hidden=8)
    assert not any("linear" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="linear_path=True"):
        model.set_linear_path(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("method", ["picard", "fastica"])
def test_ica_init_matches_ica_on_a_linear_mix(laplace_mix, method):
    if method == "picard":
        pytest.importorskip("picard")
    X, S = laplace_mix
    sep = IVAESeparator(4, prior="laplace", ica_init=method, random_state=0, **FAST).fit(X)
    # The ICA the fit started from: the separator's own matrices before training.
    Xt = sep.fitted_.standardizer.forward(X)
    B = ica_matrices(Xt, sep.get_params(), 0)[0]
    ica_score = mcc(S, B @ Xt)
    assert ica_score > 0.9
    assert mcc(S, sep.transform(X)) >= ica_score - 0.02


def test_ica_init_survives_save_and_load(laplace_mix, tmp_path):
    X, _ = laplace_mix
    sep = IVAESeparator(4, ica_init="fastica", random_state=0, **FAST).fit(X)
    back = IVAESeparator.load(sep.save(tmp_path / "sep.safetensors"), device="cpu")
    assert back.ica_init == "fastica"
    np.testing.assert_allclose(back.transform(X), sep.transform(X), rtol=1e-5, atol=1e-5)
    assert back.get_components().shape == (4, 4)


def test_ica_init_errors(laplace_mix):
    X, _ = laplace_mix
    with pytest.raises(ValueError, match="'ica_init'.*'picard'"):
        IVAESeparator(4, ica_init="jade", **FAST).fit(X)
    with pytest.raises(ValueError, match="needs whiten=True"):
        IVAESeparator(4, ica_init="fastica", whiten=False, **FAST).fit(X)
    pre = IVAESeparator(4, random_state=0, **FAST).fit(X)
    with pytest.raises(ValueError, match="ica_init='fastica' and init= both"):
        IVAESeparator(4, ica_init="fastica", **FAST).fit(X, init=pre)
