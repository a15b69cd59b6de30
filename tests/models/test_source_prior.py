"""SpeechSourcePrior: the segment prior's closed form, shapes, and its training loop."""

import math

import numpy as np
import pytest
import torch

from sepkit.models.source_prior import SpeechSourcePrior, segment_index
from sepkit.train.source_prior import reverberate, train_source_prior


def test_segment_index():
    assert segment_index(7, 3).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert segment_index(3, 0).tolist() == [0, 1, 2]  # at least one frame per segment


def test_segment_prior_is_the_closed_form_m_step():
    # Two segments of two frames, one latent: hand-computed with n + 1 pseudo-counts.
    mean = torch.tensor([[[1.0, 3.0, -2.0, 0.0]]])
    logvar = torch.log(torch.tensor([[[0.5, 0.5, 1.0, 2.0]]]))
    pm, plv = SpeechSourcePrior.segment_prior(mean, logvar, torch.tensor([0, 0, 1, 1]))
    m0, m1 = 4.0 / 3.0, -2.0 / 3.0
    s0 = (0.5 + (1 - m0) ** 2 + 0.5 + (3 - m0) ** 2 + 1.0) / 3.0
    s1 = (1.0 + (-2 - m1) ** 2 + 2.0 + (0 - m1) ** 2 + 1.0) / 3.0
    assert torch.allclose(pm[0, 0], torch.tensor([m0, m0, m1, m1]))
    assert torch.allclose(plv[0, 0].exp(), torch.tensor([s0, s0, s1, s1]))


def test_shapes_gain_and_variances():
    torch.manual_seed(0)
    model = SpeechSourcePrior(33, n_latent=3, n_hidden=8, kernel_size=3)
    power = torch.rand(2, 33, 20) + 0.1
    mean, logvar = model.encode(power)
    assert mean.shape == logvar.shape == (2, 3, 20)
    logv = model.decode(mean)
    assert logv.shape == (2, 33, 20)
    assert torch.allclose(logv.mean(1), torch.zeros(2, 20), atol=1e-5)  # shape only
    r = model.variances(power, segment_index(20, 5))
    # Scale equivariance: the ML gain follows the input's scale exactly.
    r10 = model.variances(10.0 * power, segment_index(20, 5))
    assert torch.allclose(r10, 10.0 * r, rtol=1e-4)
    # NLL at the ML gain: log g + mean log v + 1, with g = mean(power / v).
    log_gain, nll = model.gain_nll(power, logv)
    g = (power / logv.exp()).mean(1)
    assert torch.allclose(log_gain, g.log(), rtol=1e-5)
    assert torch.allclose(nll, g.log() + logv.mean(1) + 1.0, rtol=1e-5)


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size must be odd, got 4"):
        SpeechSourcePrior(33, kernel_size=4)


def test_reverberate_matches_numpy_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50)
    rir = torch.tensor([[1.0, 0.5, -0.25]])
    wet = reverberate(x, rir, 1.0, g)
    for i in range(3):
        ref = np.convolve(x[i].numpy(), rir[0].numpy())[:50]
        np.testing.assert_allclose(wet[i].numpy(), ref, atol=1e-5)
    assert torch.equal(reverberate(x, rir, 0.0, g), x)


def _harmonic_batches(n_fft, n_times, batch, seed):
    """Endless batches of harmonic tones with random pitch and level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / 8000.0
    while True:
        f0 = rng.uniform(100, 300, (batch, 1))
        amp = rng.uniform(0.1, 1.0, (batch, 1))
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * amp
        x = x + 0.01 * rng.normal(size=x.shape)
        yield torch.from_numpy(x.astype(np.float32))


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = SpeechSourcePrior(65, n_latent=3, n_hidden=16, kernel_size=3)
    hist = train_source_prior(
        model,
        _harmonic_batches(128, 2048, 8, 0),
        n_fft=128,
        hop=32,
        segment_frames=16,
        n_steps=60,
        lr=3e-3,
        log_every=20,
    )
    assert [h["step"] for h in hist] == [20, 40, 60]
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.05


def test_training_refuses_a_mismatched_stft():
    model = SpeechSourcePrior(65, n_latent=2, n_hidden=4, kernel_size=3)
    with pytest.raises(ValueError, match=r"n_fft=256 gives 129 bins.*Pass n_fft=128"):
        train_source_prior(model, iter([]), n_fft=256, hop=64, segment_frames=4, n_steps=1)


def _ddp_rank(rank: int, init_file: str, files: list[str], out: str) -> None:
    """One rank: train the prior for a few steps on its shard, save its weights."""
    import torch.distributed as dist

    from sepkit.data import WindowCorpus

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)  # same initial weights on both ranks
        model = SpeechSourcePrior(65, n_latent=2, n_hidden=4, kernel_size=3)
        corpus = WindowCorpus(files, 0.25, seed=1, n_epochs=None)  # rank, world: the group
        loader = torch.utils.data.DataLoader(corpus, batch_size=2)
        batches = (b["window"][:, 0] for b in loader)
        train_source_prior(
            model, batches, n_fft=128, hop=32, segment_frames=8, n_steps=4, seed=rank, log_every=2
        )
        torch.save({"rank": corpus.rank, "state": model.state_dict()}, f"{out}.{rank}")
        # Both ranks leave together: a rank that tore its group down while the other was
        # still in gloo's last exchange aborted it once ("terminate called without an
        # active exception", SIGABRT) in a clean-clone CI run.
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed gloo",
)
def test_two_gloo_ranks_train_identical_replicas_on_their_shards(tmp_path):
    import soundfile as sf
    import torch.multiprocessing as mp

    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = tmp_path / f"s{i}.wav"
        sf.write(path, (0.1 * rng.normal(size=8000)).astype(np.float32), 8000)
        files.append(str(path))
    out = str(tmp_path / "state")
    mp.spawn(_ddp_rank, args=(str(tmp_path / "init"), files, out), nprocs=2, join=True)
    s0, s1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert (s0["rank"], s1["rank"]) == (0, 1)
    # Different batches per rank, averaged gradients: the replicas stay identical,
    # and they moved away from the shared start.
    torch.manual_seed(0)
    start = SpeechSourcePrior(65, n_latent=2, n_hidden=4, kernel_size=3).state_dict()
    for k in start:
        torch.testing.assert_close(s0["state"][k], s1["state"][k])
    assert any(not torch.equal(s0["state"][k], start[k]) for k in start)
