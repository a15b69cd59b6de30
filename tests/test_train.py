"""Tests for the training engine (sepkit/train/) through IVAESeparator and train_ivae:
checkpoint/resume, non-finite rollback, early stopping, progress bar, precision/compile."""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import pytest
import torch

import sepkit.train as train_mod
from sepkit import IVAESeparator
from sepkit.datasets import make_nonlinear_ica
from sepkit.models import IVAE

# 200 steps: two log intervals of 100, the second after a checkpoint at 100.
TINY = dict(n_steps=200, n_hidden=8, batch_size=64, device="cpu", random_state=0)
LOG_EVERY = 100  # IVAESeparator's log interval


@pytest.fixture(scope="module")
def data():
    X, _, u = make_nonlinear_ica(3, 10, 100, 1, random_state=0)
    return X, u


@pytest.fixture(scope="module")
def straight(data):
    X, u = data
    return IVAESeparator(3, **TINY).fit(X, u)


class _Interrupted(Exception):
    pass


def _interrupt_after_first_checkpoint(monkeypatch):
    """Make the first checkpoint write succeed and then 'kill' the fit."""
    write = train_mod._write_checkpoint
    steps = []

    def write_then_die(path, state):
        write(path, state)
        steps.append(state["step"])
        raise _Interrupted

    monkeypatch.setattr(train_mod, "_write_checkpoint", write_then_die)
    return steps


def test_resume_after_interruption_is_bit_identical(tmp_path, data, straight, monkeypatch):
    X, u = data
    kw = dict(TINY, checkpoint_dir=tmp_path, checkpoint_every=100)
    steps = _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(_Interrupted):
        IVAESeparator(3, **kw).fit(X, u)
    assert steps == [100]
    monkeypatch.undo()

    # The checkpoint holds tensors and plain containers only.
    ckpt = torch.load(tmp_path / "ivae_checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 100 and not ckpt["done"]
    assert len(ckpt["history"]) == 1

    resumed = IVAESeparator(3, **kw).fit(X, u, resume=True)
    np.testing.assert_array_equal(resumed.transform(X, u), straight.transform(X, u))
    for a, b in zip(
        resumed.model_.state_dict().values(), straight.model_.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.history_ == straight.history_
    assert resumed.n_steps_run_ == TINY["n_steps"]
    # No temp file is left beside the checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ivae_checkpoint.pt"]


def test_resume_restores_the_noise_rng(tmp_path, data, straight, monkeypatch):
    # Without the global RNG state the reparameterisation noise after the
    # checkpoint differs, and so do the weights: the bit-identity above rests on it.
    X, u = data
    kw = dict(TINY, checkpoint_dir=tmp_path, checkpoint_every=100)
    _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(_Interrupted):
        IVAESeparator(3, **kw).fit(X, u)
    monkeypatch.undo()
    monkeypatch.setattr(
        train_mod, "_set_rng_states", lambda states, gen, dev: gen.set_state(states["generator"])
    )
    resumed = IVAESeparator(3, **kw).fit(X, u, resume=True)
    assert not np.array_equal(resumed.transform(X, u), straight.transform(X, u))


def test_resume_of_a_finished_fit_and_no_silent_overwrite(tmp_path, data, straight):
    X, u = data
    kw = dict(TINY, checkpoint_dir=tmp_path, checkpoint_every=100)
    first = IVAESeparator(3, **kw).fit(X, u)
    np.testing.assert_array_equal(first.transform(X, u), straight.transform(X, u))
    before = (tmp_path / "ivae_checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="holds a checkpoint of an earlier run. Pass resume"):
        IVAESeparator(3, **kw).fit(X, u)
    assert (tmp_path / "ivae_checkpoint.pt").read_bytes() == before
    # A finished checkpoint resumes to the same model without training again.
    again = IVAESeparator(3, **kw).fit(X, u, resume=True)
    np.testing.assert_array_equal(again.transform(X, u), straight.transform(X, u))
    assert again.history_ == straight.history_


def test_resume_errors(tmp_path, data):
    X, u = data
    with pytest.raises(ValueError, match="resume=True needs the checkpoint_dir"):
        IVAESeparator(3, **TINY).fit(X, u, resume=True)
    with pytest.raises(ValueError, match="Invalid value for the 'resume' parameter"):
        IVAESeparator(3, **TINY).fit(X, u, resume="yes")
    # No checkpoint yet: resume starts afresh (the preemptible-job pattern).
    kw = dict(TINY, n_steps=10, checkpoint_dir=tmp_path / "new")
    IVAESeparator(3, **kw).fit(X, u, resume=True)
    assert (tmp_path / "new" / "ivae_checkpoint.pt").is_file()
    with pytest.raises(ValueError, match=r"other settings: n_steps=10 \(now 20\)"):
        IVAESeparator(3, **{**kw, "n_steps": 20}).fit(X, u, resume=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ivae_checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable sepkit checkpoint"):
        IVAESeparator(3, **{**kw, "checkpoint_dir": bad}).fit(X, u, resume=True)
    torch.save({"format": 99}, bad / "ivae_checkpoint.pt")
    with pytest.raises(ValueError, match=r"is not a sepkit checkpoint \(format 1\)"):
        IVAESeparator(3, **{**kw, "checkpoint_dir": bad}).fit(X, u, resume=True)


def test_resume_refuses_other_data_of_the_same_shape(tmp_path, data):
    X, u = data
    kw = dict(TINY, n_steps=10, checkpoint_every=10, checkpoint_dir=tmp_path)
    IVAESeparator(3, **kw).fit(X, u)
    ckpt = tmp_path / "ivae_checkpoint.pt"
    before = ckpt.read_bytes()
    other, _, _ = make_nonlinear_ica(3, 10, 100, 1, random_state=1)
    assert other.shape == X.shape
    msg = (
        r"trained on other data: the data of this fit differ .* same\. Resume with the data the "
        rf"run started with, or start afresh: pass resume=False with another checkpoint_dir "
        rf"than '{tmp_path}'"
    )
    with pytest.raises(ValueError, match=msg):
        IVAESeparator(3, **kw).fit(other, u, resume=True)
    # The same recording with other labels u (same shape) is other data too.
    with pytest.raises(ValueError, match="the u labels or usable samples .* differ"):
        IVAESeparator(3, **kw).fit(X, np.roll(u, 100), resume=True)
    assert ckpt.read_bytes() == before
    # The same data still resume (a finished run: nothing to train).
    IVAESeparator(3, **kw).fit(X, u, resume=True)


def test_resume_of_a_checkpoint_without_data_fingerprint_warns(
    tmp_path, data, straight, monkeypatch
):
    # Checkpoints written before the data were recorded still resume (bit-identical),
    # with a warning that the data could not be checked.
    X, u = data
    kw = dict(TINY, checkpoint_dir=tmp_path, checkpoint_every=100)
    _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(_Interrupted):
        IVAESeparator(3, **kw).fit(X, u)
    monkeypatch.undo()
    path = tmp_path / "ivae_checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert state["data"]["sha256"] and len(state["data"]["blocks"]) == train_mod._N_BLOCKS
    del state["data"]
    torch.save(state, path)
    with pytest.warns(UserWarning, match="cannot check that the data are the same"):
        resumed = IVAESeparator(3, **kw).fit(X, u, resume=True)
    np.testing.assert_array_equal(resumed.transform(X, u), straight.transform(X, u))
    # The checkpoints written after the resume record the data.
    assert torch.load(path, weights_only=True)["data"] is not None


def test_resume_tells_rounding_from_an_edit(tmp_path, data):
    model, Xt, ut = _tiny_model_and_data(data)
    kw = dict(n_steps=10, checkpoint_every=10, checkpoint_dir=tmp_path)
    _train_direct(model, Xt, ut, **kw)
    # The last bit of a few samples (another machine's rounding): resumes, with a warning.
    rounded = Xt.clone()
    rounded[0, :5] = torch.nextafter(rounded[0, :5], torch.tensor(math.inf))
    with pytest.warns(RuntimeWarning, match="differ in their last bits"):
        _train_direct(copy.deepcopy(model), rounded, ut, resume=True, **kw)
    # One sample moved by one standard deviation: other data.
    edited = Xt.clone()
    edited[1, 7] += 1.0
    with pytest.raises(ValueError, match="trained on other data"):
        _train_direct(copy.deepcopy(model), edited, ut, resume=True, **kw)


def test_data_fingerprint_covers_data_u_and_starts():
    X = torch.randn(2, 300)
    u = torch.arange(300) // 100
    base = train_mod._data_fingerprint(X, u, None)
    assert base == train_mod._data_fingerprint(X.clone(), u.clone(), None)
    assert train_mod._data_fingerprint(X.double(), u, None)["sha256"] != base["sha256"]
    starts = train_mod._data_fingerprint(X, u, torch.arange(10))
    assert starts["labels_sha256"] != base["labels_sha256"] and starts["sha256"] == base["sha256"]
    assert train_mod._data_fingerprint(X, None, None)["labels_sha256"] != base["labels_sha256"]
    # Hashed chunk by chunk: the same digest as one pass over the bytes.
    whole = hashlib.sha256(f"{X.dtype} {tuple(X.shape)}".encode() + X.numpy().tobytes())
    assert base["sha256"] == whole.hexdigest()


def _train_direct(model, X, u, **kw):
    gen = torch.Generator().manual_seed(0)
    args = dict(n_steps=50, batch_size=16, chunk_samples=1, lr=0.01, generator=gen, log_every=5)
    return train_mod.train_ivae(model, X, u, **{**args, **kw})


def _tiny_model_and_data(data):
    X, u = data
    model = IVAE(3, 3, n_segments=10, n_hidden=8, n_layers=2)
    Xt = torch.from_numpy((X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)).float()
    return model, Xt, torch.from_numpy(u).long()


def test_train_ivae_resume_needs_a_folder(data):
    model, Xt, ut = _tiny_model_and_data(data)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_dir"):
        _train_direct(model, Xt, ut, resume=True)


def _nan_forward(monkeypatch, bad_calls):
    """Patch IVAE.forward to return NaN (with a graph, so backward runs) on some calls."""
    forward = IVAE.forward
    calls = []

    def maybe_nan(self, x, u=None):
        out = forward(self, x, u)
        calls.append(None)
        if bad_calls(len(calls)):
            return tuple(t * float("nan") for t in out)
        return out

    monkeypatch.setattr(IVAE, "forward", maybe_nan)


def test_nonfinite_loss_rolls_back_and_warns(data, monkeypatch):
    X, u = data
    n_steps = 300
    # NaN at step 150: caught at the check of step 200, back to the state of step 100.
    _nan_forward(monkeypatch, lambda call: call == 150)
    with pytest.warns(
        RuntimeWarning,
        match=r"non-finite loss at step 200; restored the state of step 100 and halved the "
        r"learning rate",
    ):
        sep = IVAESeparator(3, **{**TINY, "n_steps": n_steps}).fit(X, u)
    events = [h for h in sep.history_ if "event" in h]
    assert [h["step"] for h in events] == [200]
    assert math.isnan(events[0]["loss"])
    warmup = max(1, n_steps // 20)
    expected_lr = sep.lr * 0.5 * train_mod._lr_factor(n_steps - 1, n_steps, warmup)
    assert sep.history_[-1]["lr"] == pytest.approx(expected_lr, rel=1e-12)
    assert all(torch.isfinite(p).all() for p in sep.model_.parameters())
    assert np.isfinite(sep.transform(X, u)).all()


def test_rollback_restores_the_weights_of_the_last_good_check(data, monkeypatch):
    model, Xt, ut = _tiny_model_and_data(data)
    _nan_forward(monkeypatch, lambda call: call == 8)  # inside the second interval (6-10)
    snapshots = {}
    load = model.load_state_dict

    def spy(state, *a, **k):
        snapshots["restored"] = {k2: v.clone() for k2, v in state.items()}
        return load(state, *a, **k)

    model.load_state_dict = spy
    with pytest.warns(RuntimeWarning, match="non-finite loss at step 10; restored the state of"):
        history = _train_direct(model, Xt, ut, n_steps=10)
    # The restored state is the one after step 5 and the model ends there, finite.
    assert history[-1]["event"].endswith(
        "restored the state of step 5 and halved the learning rate"
    )
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots["restored"][name], rtol=0, atol=0)


def test_persistent_nonfinite_loss_raises(data, monkeypatch):
    model, Xt, ut = _tiny_model_and_data(data)
    _nan_forward(monkeypatch, lambda call: True)
    with (
        pytest.warns(RuntimeWarning, match="non-finite loss"),
        pytest.raises(
            RuntimeError,
            match=rf"non-finite at {train_mod.MAX_NONFINITE} consecutive checks \(last at step "
            rf"{5 * train_mod.MAX_NONFINITE}\).*restored the state of step 0",
        ),
    ):
        _train_direct(model, Xt, ut, n_steps=50, log_every=5)


def test_early_stopping_stops_on_a_plateau(data):
    X, u = data
    patience = 2
    # No decrease counts with this min_delta: every check after the first is stale.
    kw = dict(TINY, n_steps=2000, patience=patience, min_delta=1e6)
    sep = IVAESeparator(3, early_stopping=True, **kw).fit(X, u)
    stop_at = (patience + 1) * LOG_EVERY
    assert sep.n_steps_run_ == stop_at < kw["n_steps"]
    assert sep.history_[-1]["stopped_early_at"] == stop_at
    assert len(sep.history_) == patience + 1

    full = IVAESeparator(3, early_stopping=False, **{**kw, "n_steps": 400}).fit(X, u)
    assert full.n_steps_run_ == 400
    assert not any("stopped_early_at" in h for h in full.history_)


def test_early_stopping_on_a_real_plateau(data):
    # A tiny model that converges within the first few hundred steps stops
    # long before n_steps with the default min_delta.
    model, Xt, ut = _tiny_model_and_data(data)
    n_steps = 5000
    history = _train_direct(
        model, Xt, ut, n_steps=n_steps, lr=0.03, log_every=20, early_stopping=True, patience=5
    )
    assert history[-1]["stopped_early_at"] < n_steps
    assert history[-1]["stopped_early_at"] == history[-1]["step"]


def test_progress_bar_shows_elbo_and_quiet_prints_nothing(data, capsys):
    X, u = data
    IVAESeparator(3, **{**TINY, "n_steps": 100}, verbose=False).fit(X, u)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    IVAESeparator(3, **{**TINY, "n_steps": 100}, verbose=True).fit(X, u)
    err = capsys.readouterr().err
    assert "elbo=" in err and "step/s" in err and "100/100" in err


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (
            dict(precision="fp16"),
            ValueError,
            "Allowed values are 'fp32' and 'bf16', but got 'fp16'",
        ),
        (
            dict(precision="bf16"),
            ValueError,
            r"precision='bf16' needs a CUDA device.*'fp32' on CPU",
        ),
        (dict(compile="yes"), ValueError, "Invalid value for the 'compile' parameter"),
        (dict(early_stopping="on"), ValueError, "Invalid value for the 'early_stopping' parameter"),
        (dict(verbose="no"), ValueError, "Invalid value for the 'verbose' parameter"),
        (dict(patience=0), ValueError, "'patience' must be >= 1, got 0"),
        (dict(min_delta=-1.0), ValueError, "'min_delta' must be >= 0.0, got -1.0"),
        (dict(checkpoint_every=0), ValueError, "'checkpoint_every' must be >= 1, got 0"),
        (dict(checkpoint_dir=3), TypeError, "'checkpoint_dir' must be None or a path"),
    ],
)
def test_engine_params_are_validated(data, params, error, match):
    X, u = data
    with pytest.raises(error, match=match):
        IVAESeparator(3, **{**TINY, **params}).fit(X, u)


def test_engine_defaults():
    sep = IVAESeparator()
    assert sep.compile is False and sep.precision == "fp32" and sep.early_stopping is False
    assert sep.checkpoint_dir is None and sep.checkpoint_every >= 1


def test_save_load_with_checkpoint_dir_path(tmp_path, data):
    X, u = data
    sep = IVAESeparator(3, **{**TINY, "n_steps": 20}, checkpoint_dir=tmp_path / "ck").fit(X, u)
    path = sep.save(tmp_path / "sep.safetensors")
    loaded = IVAESeparator.load(path, device="cpu")
    assert loaded.checkpoint_dir == str(tmp_path / "ck")
    assert loaded.n_steps_run_ == sep.n_steps_run_ == 20
    np.testing.assert_array_equal(loaded.transform(X, u), sep.transform(X, u))


def test_train_ivae_bf16_needs_cuda(data):
    model, Xt, ut = _tiny_model_and_data(data)
    with pytest.raises(ValueError, match="precision='bf16' needs a CUDA device"):
        _train_direct(model, Xt, ut, precision="bf16")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_bf16_fit_and_resume(tmp_path, data, monkeypatch):
    X, u = data
    kw = dict(TINY, device="cuda", checkpoint_dir=tmp_path, checkpoint_every=100)
    straight = IVAESeparator(3, **{**kw, "checkpoint_dir": None}).fit(X, u)
    _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(_Interrupted):
        IVAESeparator(3, **kw).fit(X, u)
    monkeypatch.undo()
    resumed = IVAESeparator(3, **kw).fit(X, u, resume=True)
    np.testing.assert_array_equal(resumed.transform(X, u), straight.transform(X, u))
    bf16 = IVAESeparator(3, **{**TINY, "device": "cuda", "precision": "bf16"}).fit(X, u)
    assert np.isfinite(bf16.history_[-1]["loss"])
    assert np.isfinite(bf16.transform(X, u)).all()


def test_gradient_spike_is_clipped_to_a_multiple_of_the_running_norm():
    from torch import nn

    from sepkit.train import _CLIP_FACTOR, _clip_gradients

    model = nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    norm0 = float(torch.sqrt(torch.tensor(8.0)))  # 8 gradient entries of 1
    ema = _clip_gradients(model, None)  # first call: the average starts at the norm
    assert float(ema) == pytest.approx(norm0)
    for p in model.parameters():
        p.grad = 100.0 * torch.ones_like(p)  # a spike, 100 x the usual norm
    _clip_gradients(model, ema)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert float(clipped) == pytest.approx(_CLIP_FACTOR * norm0, rel=1e-5)
    for p in model.parameters():
        p.grad = 0.5 * torch.ones_like(p)  # below the cap: untouched
    _clip_gradients(model, ema)
    assert all(torch.equal(p.grad, 0.5 * torch.ones_like(p)) for p in model.parameters())


# ----------------------------------------------------------------- data placement
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_host_streaming_on_cpu_matches_resident_data(data, kernel_size):
    # On CPU there is no pinned memory; the host path gathers each batch into
    # a fresh host buffer (index_select) instead of indexing in place, with
    # the same generator: the weights must come out identical, for single
    # samples (kernel 1) and for chunks of 3 samples (kernel 3).
    X, u = data
    kw = dict(TINY, n_steps=30, kernel_size=kernel_size)
    host = IVAESeparator(3, **kw, data_device="host").fit(X, u)
    resident = IVAESeparator(3, **kw, data_device="auto").fit(X, u)
    assert host.data_device_ == "host" and resident.data_device_ == "device"
    for a, b in zip(host.model_.parameters(), resident.model_.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gather_matches_indexing():
    from sepkit.train import _gather

    data = torch.arange(24.0).reshape(2, 12)
    idx = torch.tensor([[0, 1, 2], [7, 8, 9]])  # two chunks of three samples
    out = _gather(data, idx, 1, pin=False)
    assert out.shape == (2, 2, 3) and torch.equal(out, data[:, idx])
    labels = torch.arange(12)
    assert torch.equal(_gather(labels, idx, 0, pin=False), labels[idx])


def test_resolve_data_device(monkeypatch):
    from sepkit.train import resolve_data_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_data_device("auto", cpu, 10**12) == "device"
    assert resolve_data_device("host", cpu, 1) == "host"
    assert resolve_data_device("device", gpu, 10**15) == "device"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert resolve_data_device("auto", gpu, 500) == "device"  # half the free memory
    assert resolve_data_device("auto", gpu, 501) == "host"
    with pytest.raises(ValueError, match="'data_device' parameter. Allowed values are 'auto'"):
        resolve_data_device("gpu", cpu, 1)


def test_data_device_is_validated(data):
    X, u = data
    with pytest.raises(ValueError, match="Invalid value for the 'data_device' parameter"):
        IVAESeparator(3, **TINY, data_device="pinned").fit(X, u)


@cuda
def test_cuda_host_streaming_uses_pinned_memory(data):
    from sepkit.train import _gather

    X, u = data
    Xh = torch.from_numpy(np.ascontiguousarray(X))
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    out = _gather(Xh, idx, 1, pin=True)
    assert out.is_pinned() and torch.equal(out, Xh[:, idx])
    sep = IVAESeparator(3, **{**TINY, "device": "cuda"}, data_device="host").fit(X, u)
    resident = IVAESeparator(3, **{**TINY, "device": "cuda"}, data_device="device").fit(X, u)
    assert sep.data_device_ == "host" and resident.data_device_ == "device"
    # Different batch generators (CPU vs CUDA), the same problem: both learn.
    for fit in (sep, resident):
        assert np.isfinite(fit.history_[-1]["loss"])
        assert fit.history_[-1]["loss"] < fit.history_[0]["loss"]


# ----------------------------------------------------------------- callbacks
def test_fit_callback_sees_the_current_sources_and_can_stop(data):
    X, u = data
    seen = []

    def monitor(step, sep):
        seen.append((step, sep.transform(X, u).shape, sep.model_.training))
        return step >= 200

    sep = IVAESeparator(3, **{**TINY, "n_steps": 400}).fit(X, u, callback=monitor)
    assert seen == [(100, (3, X.shape[1]), False), (200, (3, X.shape[1]), False)]
    assert sep.n_steps_run_ == 200 and sep.history_[-1]["stopped_by_callback_at"] == 200


def test_a_passive_callback_changes_nothing(data, straight):
    X, u = data

    def look(step, sep):
        sep.transform(X, u)  # runs the model between steps; returns None: go on

    watched = IVAESeparator(3, **TINY).fit(X, u, callback=look)
    np.testing.assert_array_equal(watched.transform(X, u), straight.transform(X, u))
    assert watched.model_.training is False


def test_checkpoint_folder_keeps_no_temp_debris_of_a_killed_run(tmp_path, data):
    from sepkit.train import checkpoint_path

    X, u = data
    ckpt = checkpoint_path(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    # What a run killed while writing its checkpoint leaves (atomic_write's name).
    (tmp_path / f".{ckpt.name}.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    IVAESeparator(
        3, **{**TINY, "n_steps": 20, "checkpoint_every": 10}, checkpoint_dir=tmp_path
    ).fit(X, u)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.name, "notes.txt"])
