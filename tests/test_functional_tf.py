"""Time-frequency math against hand-computed and numpy reference values."""

import numpy as np
import pytest
import torch

from sepkit import functional_tf as F


def _crandn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex128)


def _ip_reference(W, X, weights):
    """Eqs. (15)-(17) of Ono (2011), one frequency and one source at a time, in numpy."""
    W = W.copy()
    n_freqs, n_src, _ = W.shape
    T = X.shape[-1]
    for n in range(n_src):
        for f in range(n_freqs):
            V = (X[f] * weights[n, f]) @ X[f].conj().T / T
            w = np.linalg.solve(W[f] @ V, np.eye(n_src)[:, n])
            w = w / np.sqrt(np.real(w.conj() @ V @ w))
            W[f, n] = w.conj()
    return W


def test_ip_update_matches_numpy_reference():
    rng = np.random.default_rng(0)
    W = _crandn(rng, 3, 2, 2) + 2 * np.eye(2)
    X = _crandn(rng, 3, 2, 40)
    weights = rng.uniform(0.5, 2.0, size=(2, 3, 40))
    got = F.ip_update(torch.from_numpy(W), torch.from_numpy(X), torch.from_numpy(weights))
    np.testing.assert_allclose(got.numpy(), _ip_reference(W, X, weights), rtol=1e-6, atol=1e-8)


def test_ip_update_makes_last_source_decorrelated_and_normalised():
    rng = np.random.default_rng(1)
    X = torch.from_numpy(_crandn(rng, 2, 2, 100))
    weights = torch.from_numpy(rng.uniform(0.5, 2.0, size=(2, 1, 100)))
    W = F.ip_update(torch.eye(2, dtype=X.dtype).expand(2, 2, 2), X, weights)
    V = (X * weights[1]) @ X.conj().transpose(-1, -2) / 100  # source 1's weighted covariance
    C = W @ V @ W.conj().transpose(-1, -2)
    # w_1^H V_1 w_1 = 1 and, as row 0 was not touched after, (W V_1 w_1)[0] = 0.
    np.testing.assert_allclose(C[:, 1, 1].real.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(C[:, 0, 1].abs().numpy(), 0.0, atol=1e-6)


def test_ip_update_keeps_the_row_where_the_covariance_is_singular():
    # Frequency 1 holds no signal at all: its weighted covariance is 0, so the
    # solve fails there (torch.linalg.solve raised and stopped the whole fit);
    # frequency 0 must be updated as before and frequency 1 keep its rows.
    rng = np.random.default_rng(3)
    W = (_crandn(rng, 2, 2, 2) + 2 * np.eye(2)).astype(np.complex64)
    X = _crandn(rng, 2, 2, 40).astype(np.complex64)
    X[1] = 0.0
    weights = rng.uniform(0.5, 2.0, size=(2, 2, 40)).astype(np.float32)
    got = F.ip_update(torch.from_numpy(W), torch.from_numpy(X), torch.from_numpy(weights))
    ref = _ip_reference(W[:1].astype(np.complex128), X[:1].astype(np.complex128), weights[:, :1])
    np.testing.assert_allclose(got[0].numpy(), ref[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1].numpy(), W[1])


@pytest.mark.parametrize("per_freq", [True, False])
def test_weighted_covariances_match_numpy_reference(per_freq):
    rng = np.random.default_rng(4)
    X = _crandn(rng, 3, 3, 50)
    weights = rng.uniform(0.5, 2.0, size=(2, 3 if per_freq else 1, 50))
    outer = F.frame_outer_products(torch.from_numpy(X))
    assert outer.shape == (3, 50, 18) and not outer.is_complex()
    got = F.weighted_covariances(outer, torch.from_numpy(weights)).numpy()
    assert got.shape == (3, 2, 3, 3)
    for f in range(3):
        for n in range(2):
            w = weights[n, f if per_freq else 0]
            ref = (X[f] * w) @ X[f].conj().T / 50
            np.testing.assert_allclose(got[f, n], ref, rtol=1e-12, atol=1e-12)


def test_ip_sweep_reuses_covariances_as_repeated_updates():
    # Sweeps with the weights held fixed (the source model's n_ip sweeps) may
    # share one set of covariances: the result is that of ip_update each time.
    rng = np.random.default_rng(5)
    W = torch.from_numpy(_crandn(rng, 4, 2, 2) + 2 * np.eye(2))
    X = torch.from_numpy(_crandn(rng, 4, 2, 60))
    weights = torch.from_numpy(rng.uniform(0.5, 2.0, size=(2, 4, 60)))
    V = F.weighted_covariances(F.frame_outer_products(X), weights)
    got = F.ip_sweep(F.ip_sweep(W, V), V)
    ref = _ip_reference(
        _ip_reference(W.numpy(), X.numpy(), weights.numpy()), X.numpy(), weights.numpy()
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-8)  # the ridge: 1e-9


def test_power_is_squared_magnitude():
    Y = torch.tensor([[3 + 4j, -1j], [0j, 2 - 2j]], dtype=torch.complex64)
    np.testing.assert_array_equal(F.power(Y).numpy(), np.array([[25, 1], [0, 8]], np.float32))
    assert F.power(Y).dtype == torch.float32


def test_projection_back_recovers_images_at_reference_mic():
    rng = np.random.default_rng(2)
    A = _crandn(rng, 4, 2, 2) + 2 * np.eye(2)  # mixing per frequency
    S = _crandn(rng, 4, 2, 30)
    X = A @ S
    demix = np.linalg.inv(A) * np.array([3.0, -0.5])[None, :, None]  # arbitrary source scales
    Y = demix @ X
    for ref in (0, 1):
        got = F.projection_back(torch.from_numpy(Y), torch.from_numpy(demix), ref).numpy()
        images = A[:, ref, :, None] * S  # source n as heard at mic ref
        np.testing.assert_allclose(got, images, atol=1e-10)


def test_projection_back_scales_non_square_uses_pseudo_inverse():
    rng = np.random.default_rng(3)
    demix = _crandn(rng, 2, 2, 3)
    got = F.projection_back_scales(torch.from_numpy(demix), ref=2).numpy()
    np.testing.assert_allclose(got, np.linalg.pinv(demix)[:, 2, :], atol=1e-10)


def test_auxiva_weights_hand_computed():
    Y = torch.zeros(2, 1, 2, dtype=torch.complex64)
    Y[0, 0] = torch.tensor([3.0, 0.0])
    Y[1, 0] = torch.tensor([4.0j, 2.0])
    w = F.auxiva_weights(Y)
    # frame norms over frequency: sqrt(9 + 16) = 5 and 2.
    np.testing.assert_allclose(w[0, 0].numpy(), [1 / 5, 1 / 2], rtol=1e-6)


def test_whitening_gives_identity_covariance():
    rng = np.random.default_rng(4)
    X = torch.from_numpy(_crandn(rng, 3, 3, 500) * np.array([1.0, 5.0, 0.2])[:, None])
    P = F.whiten_per_frequency(X, 2)
    Z = P @ X
    C = Z @ Z.conj().transpose(-1, -2) / 500
    # Up to the 1e-8 relative floor added to the eigenvalues.
    np.testing.assert_allclose(C.numpy(), np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-6)


@pytest.mark.parametrize(("rate", "n_fft"), [(16000, 4096), (8000, 2048), (44100, 8192)])
def test_fft_size_for(rate, n_fft):
    assert F.fft_size_for(rate) == n_fft


def test_stft_istft_round_trip():
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    X = F.stft(x, 256, 64)
    assert X.shape == (129, 2, 4000 // 64 + 1)
    np.testing.assert_allclose(F.istft(X, 256, 64, 4000).numpy(), x.numpy(), atol=1e-5)


def test_cross_spectrum_phase_instantaneous_vs_delayed():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.laplace(size=(2, 32000)).astype(np.float32))
    n_fft = 512
    # A real mixing matrix: every cross-spectrum is real (phase 0 or pi).
    inst = torch.tensor([[1.0, 0.5], [0.8, 1.0]]) @ src
    assert F.cross_spectrum_phase(F.stft(inst, n_fft, n_fft // 4)) < 0.05
    # Delay the second channel by 3 samples: the phase turns with frequency,
    # so |sin(phase)| averages well above 0 (2/pi for a uniform phase).
    delayed = inst.clone()
    delayed[1] = torch.roll(inst[1], 3)
    assert F.cross_spectrum_phase(F.stft(delayed, n_fft, n_fft // 4)) > 0.3
    # Unrelated channels have no coherent bins: NaN (the mixing cannot be told).
    assert np.isnan(F.cross_spectrum_phase(F.stft(src, n_fft, n_fft // 4)))


def test_cross_spectrum_phase_ignores_an_empty_band():
    # A 16 kHz room saved at 44.1 kHz has nothing above 8 kHz but a faint coherent
    # residue, whose real cross-spectrum read as an instantaneous mix (audit: a room
    # scored 0.12, under the threshold of 0.12, against 0.38 at 16 kHz). Here: a short
    # room upsampled, plus an instantaneously mixed residue above 9 kHz at -70 dB.
    from scipy.signal import butter, lfilter, resample_poly

    rng = np.random.default_rng(1)
    src = rng.laplace(size=(2, 16000 * 6))
    h = rng.standard_normal((2, 2, 400)) * np.exp(-np.arange(400) / 80)
    room = np.stack([sum(np.convolve(src[j], h[i, j])[:96000] for j in range(2)) for i in range(2)])
    up = resample_poly(room, 441, 160, axis=1)
    b, a = butter(8, 9000, "highpass", fs=44100)
    residue = np.array([[1.0, 0.6], [0.7, 1.0]]) @ lfilter(b, a, rng.standard_normal(up.shape))
    n_fft = F.fft_size_for(44100.0, 0.064)
    scores = [
        F.cross_spectrum_phase(F.stft(torch.from_numpy(x.astype(np.float32)), n_fft, n_fft // 4))
        for x in (up, up + 3e-4 * up.std() * residue)
    ]
    # Measured: 0.769 and 0.764 (before: 0.703 and 0.376).
    assert scores[0] > 0.7 and abs(scores[1] - scores[0]) < 0.02, scores


def test_wiener_blend_hand_computed():
    # One bin, two sources: powers 9 and 16 share the sum 3 + 4j as 9/25 and 16/25.
    Y = torch.tensor([[[3.0 + 0j], [4j]]], dtype=torch.complex64)  # (F=1, N=2, T=1)
    masked = torch.tensor([[[9 / 25 * (3 + 4j)], [16 / 25 * (3 + 4j)]]], dtype=torch.complex64)
    torch.testing.assert_close(F.wiener_blend(Y, 1.0), masked)
    torch.testing.assert_close(F.wiener_blend(Y, 0.5), 0.5 * Y + 0.5 * masked)
    assert F.wiener_blend(Y, 0.0) is Y


def test_wiener_blend_keeps_the_sum_and_silent_bins():
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(5, 3, 7, dtype=torch.complex64, generator=g)
    Y[2] = 0  # a silent bin: zeros, not NaN
    out = F.wiener_blend(Y, 0.5)
    assert out.shape == Y.shape and torch.isfinite(torch.view_as_real(out)).all()
    torch.testing.assert_close(out.sum(1), Y.sum(1))
    assert (out[2] == 0).all()
    # A source alone in a bin keeps the whole bin.
    Y[3, 1:] = 0
    torch.testing.assert_close(F.wiener_blend(Y, 0.5)[3], Y[3])
