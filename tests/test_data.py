"""Tests for sepkit.data: windows of many recordings, streamed, sharded and resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.signal import resample_poly

from sepkit.data import WindowCorpus, WindowDataset

RATE = 1000
# Window 0.5 s, hop 0.25 s at 1000 Hz: 500 samples every 250.
WINDOW, HOP = 500, 250
LENGTHS = {"a.wav": 2350, "b.flac": 1200, "c_raw.fif": 1500}  # 8 + 3 + 5 windows


def _signal(seed: int, n_channels: int, n_times: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((n_channels, n_times))).clip(-0.9, 0.9).astype(np.float32)


def _write_audio(path, data, rate=RATE):
    subtype = "FLOAT" if str(path).endswith(".wav") else None
    sf.write(str(path), data.T, rate, subtype=subtype)


@pytest.fixture
def corpus_files(tmp_path):
    """A WAV, a FLAC and a FIF of 2 channels at 1000 Hz, and their samples as read whole."""
    import mne

    _write_audio(tmp_path / "a.wav", _signal(0, 2, LENGTHS["a.wav"]))
    _write_audio(tmp_path / "b.flac", _signal(1, 2, LENGTHS["b.flac"]))
    info = mne.create_info(["Fz", "Cz"], RATE, "eeg")
    raw = mne.io.RawArray(_signal(2, 2, LENGTHS["c_raw.fif"]) * 1e-5, info, verbose="error")
    raw.save(tmp_path / "c_raw.fif", verbose="error")
    files = [tmp_path / name for name in LENGTHS]
    full = [sf.read(str(f), dtype="float32", always_2d=True)[0].T for f in files[:2]]
    full.append(mne.io.read_raw_fif(files[2], verbose="error").get_data())
    return files, full


def _keys(items) -> list[tuple[int, int]]:
    return [(item["recording"], item["u"]) for item in items]


def test_windows_and_u_match_slicing_by_hand(corpus_files):
    files, full = corpus_files
    ds = WindowDataset(files, 0.5, hop_seconds=0.25)
    assert (ds.sample_rate, ds.window_samples, ds.n_channels) == (RATE, WINDOW, 2)
    assert ds.n_windows == (8, 3, 5) and len(ds) == 16 and ds.recordings == (0, 1, 2)
    expected = [(r, u) for r, n in enumerate(ds.n_windows) for u in range(n)]
    assert _keys(ds[i] for i in range(len(ds))) == expected
    for i in range(len(ds)):
        item = ds[i]
        start = item["u"] * HOP
        assert item["start"] == start
        assert item["window"].dtype == torch.float32 and item["window"].shape == (2, WINDOW)
        want = full[item["recording"]][:, start : start + WINDOW]
        np.testing.assert_allclose(item["window"].numpy(), want, rtol=1e-6, atol=0)
    assert ds[-1]["u"] == 4 and ds[-1]["recording"] == 2
    with pytest.raises(IndexError, match="Window index 16 is out of range for 16 windows"):
        ds[16]


def test_npy_is_memory_mapped_at_the_given_rate(tmp_path):
    data = _signal(3, 3, 1000)
    np.save(tmp_path / "x.npy", data)
    ds = WindowDataset([tmp_path / "x.npy"], 0.2, sample_rate=500)
    assert ds.window_samples == 100 and len(ds) == 10
    assert isinstance(ds._handle(ds._plans[0].source), np.memmap)
    for i in (0, 7):
        np.testing.assert_array_equal(ds[i]["window"].numpy(), data[:, i * 100 : (i + 1) * 100])


def test_resampling_to_one_rate(tmp_path):
    t1, t2 = np.arange(2000) / 1000, np.arange(4000) / 2000
    _write_audio(tmp_path / "lo.wav", np.sin(2 * np.pi * 40 * t1)[None].astype(np.float32))
    hi = np.sin(2 * np.pi * 40 * t2)[None].astype(np.float32)
    _write_audio(tmp_path / "hi.wav", hi, 2000)
    ds = WindowDataset([tmp_path / "lo.wav", tmp_path / "hi.wav"], 0.5, sample_rate=1000)
    assert ds.window_samples == 500 and ds.n_windows == (4, 4)
    item = ds[5]  # the second window of hi.wav, which starts at its sample 1000
    assert (item["recording"], item["u"], item["start"]) == (1, 1, 1000)
    # The file resampled in one piece (the window is read with the filter's reach of
    # context on both sides), not the window resampled alone.
    want = resample_poly(hi.astype(np.float64), 1, 2, axis=1, padtype="line")[:, 500:1000]
    np.testing.assert_allclose(item["window"].numpy(), want, rtol=1e-5, atol=1e-6)
    # Away from the window's edges it is the same 40 Hz sine at 1000 Hz.
    sine = np.sin(2 * np.pi * 40 * (0.5 + np.arange(500) / 1000))
    np.testing.assert_allclose(item["window"][0, 50:450].numpy(), sine[50:450], atol=0.02)


def test_mono_downmix(tmp_path):
    two, one = _signal(4, 2, 900), _signal(5, 1, 600)
    _write_audio(tmp_path / "two.wav", two)
    _write_audio(tmp_path / "one.wav", one)
    ds = WindowDataset([tmp_path / "two.wav", tmp_path / "one.wav"], 0.3, channels="mean")
    assert ds.n_channels == 1 and ds.n_windows == (3, 2)
    np.testing.assert_allclose(ds[1]["window"].numpy(), two[:, 300:600].mean(0, keepdims=True))
    np.testing.assert_allclose(ds[4]["window"].numpy(), one[:, 300:600])


def test_short_recordings_are_skipped_with_one_warning(tmp_path):
    _write_audio(tmp_path / "long.wav", _signal(0, 1, 1000))
    _write_audio(tmp_path / "short.wav", _signal(1, 1, 400))
    _write_audio(tmp_path / "tiny.wav", _signal(2, 1, 10))
    files = [tmp_path / n for n in ("short.wav", "long.wav", "tiny.wav")]
    with pytest.warns(UserWarning, match=r"Skipped 2 recording\(s\) .*\(0.5 s\): short.wav, tiny"):
        ds = WindowDataset(files, 0.5)
    assert ds.recordings == (1,) and len(ds) == 2 and ds[1]["recording"] == 1
    with pytest.raises(ValueError, match=r"No recording in 'files' is as long as one window"):
        WindowDataset(files[:1], 0.5)


def _corpus(files, **kw):
    kw = {"hop_seconds": 0.25, **kw}
    return WindowCorpus(files, 0.5, **kw)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_complete_and_equal(corpus_files, drop_last):
    files, _ = corpus_files
    everything = set(_keys(WindowDataset(files, 0.5, hop_seconds=0.25)))
    # 16 windows: 2 ranks split them evenly.
    parts = [_keys(_corpus(files, rank=r, world_size=2, drop_last=drop_last)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 8
    assert not set(parts[0]) & set(parts[1]) and set(parts[0]) | set(parts[1]) == everything
    # 16 windows over 3 ranks: padded to 6 each (one window twice) or dropped to 5 each.
    parts = [_keys(_corpus(files, rank=r, world_size=3, drop_last=drop_last)) for r in range(3)]
    count = 5 if drop_last else 6
    assert [len(p) for p in parts] == [count] * 3
    assert len(_corpus(files, rank=0, world_size=3, drop_last=drop_last)) == count
    union = [key for p in parts for key in p]
    if drop_last:
        assert len(set(union)) == 15 and set(union) < everything
    else:
        assert set(union) == everything and len(union) - len(set(union)) == 2


def test_workers_split_each_rank_once(corpus_files):
    files, _ = corpus_files
    corpus = _corpus(files, rank=1, world_size=2, seed=3)
    alone = _keys(corpus)
    loader = torch.utils.data.DataLoader(corpus, batch_size=None, num_workers=2)
    # Each window once, served round-robin by the two workers in the rank's order.
    assert _keys(loader) == alone


def test_deterministic_given_the_seed_and_new_order_each_epoch(corpus_files):
    files, _ = corpus_files
    first = _keys(_corpus(files, seed=7, n_epochs=2))
    assert first == _keys(_corpus(files, seed=7, n_epochs=2))
    assert first != _keys(_corpus(files, seed=8, n_epochs=2))
    assert first[:16] != first[16:] and sorted(first[:16]) == sorted(first[16:])
    in_order = _keys(_corpus(files, shuffle=False))
    assert in_order == _keys(WindowDataset(files, 0.5, hop_seconds=0.25))


def test_resume_continues_exactly(corpus_files):
    files, _ = corpus_files
    full = list(_corpus(files, seed=1, n_epochs=2, rank=0, world_size=2))
    assert len(full) == 16
    corpus = _corpus(files, seed=1, n_epochs=2, rank=0, world_size=2)
    it = iter(corpus)
    head = [next(it) for _ in range(11)]  # past the first epoch's 8
    state = corpus.state_dict()
    stream = dict(seed=1, shuffle=True, world_size=2, rank=0, drop_last=False, n_windows=16)
    assert state == {"epoch": 1, "position": 3, **stream}
    resumed = _corpus(files, seed=1, n_epochs=2, rank=0, world_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert _keys(head + rest) == _keys(full)
    for a, b in zip(head + rest, full, strict=True):
        assert torch.equal(a["window"], b["window"]) and a["start"] == b["start"]
    # A finished iteration starts over: the same windows again.
    assert resumed.state_dict() == {"epoch": 0, "position": 0, **stream}
    assert _keys(resumed) == _keys(full)
    # A state of another stream, or past this one's end, is refused (audit: taken, and
    # the iteration skipped or yielded nothing).
    other = _corpus(files, seed=99, n_epochs=2, rank=1, world_size=2)
    with pytest.raises(
        ValueError,
        match=r"^'state' is the position of another stream of windows: seed 1 \(this corpus: "
        r"99\), rank 0 \(this corpus: 1\)\. Load it into a WindowCorpus made as the one",
    ):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"^'state' points past the end of the stream: epoch 5"):
        resumed.load_state_dict({**state, "epoch": 5})
    with pytest.raises(ValueError, match=r"position 1000000, where it has 2 epoch\(s\) of 8"):
        resumed.load_state_dict({**state, "position": 10**6})


def test_loops_forever_without_n_epochs(corpus_files):
    files, _ = corpus_files
    corpus = _corpus(files, n_epochs=None, rank=0, world_size=2)
    it = iter(corpus)
    items = [next(it) for _ in range(20)]
    assert {k: corpus.state_dict()[k] for k in ("epoch", "position")} == {"epoch": 2, "position": 4}
    assert _keys(items[:16]) == _keys(_corpus(files, n_epochs=2, rank=0, world_size=2))
    with pytest.raises(TypeError, match=r"loops forever \(n_epochs=None\); it has no length"):
        len(corpus)


def _write_fif(path, names, data):
    import mne

    info = mne.create_info(list(names), RATE, "eeg")
    mne.io.RawArray(data * 1e-5, info, verbose="error").save(path, verbose="error")
    return mne.io.read_raw_fif(path, verbose="error").get_data()  # as stored (float32)


def test_eeg_channels_are_picked_by_name(tmp_path):
    # Two montages in other orders: the windows hold the named channels, in the order asked.
    a = _write_fif(tmp_path / "a_raw.fif", ["Fz", "Cz", "Pz"], _signal(0, 3, 1000))
    b = _write_fif(tmp_path / "b_raw.fif", ["Oz", "Pz", "Fz", "Cz"], _signal(1, 4, 1000))
    files = [tmp_path / "a_raw.fif", tmp_path / "b_raw.fif"]
    ds = WindowDataset(files, 0.5, channels=["Cz", "Fz"])
    assert ds.n_channels == 2 and ds.n_windows == (2, 2)
    np.testing.assert_array_equal(ds[1]["window"].numpy(), a[[1, 0], 500:1000].astype(np.float32))
    np.testing.assert_array_equal(ds[2]["window"].numpy(), b[[3, 2], :500].astype(np.float32))
    corpus = WindowCorpus(files, 0.5, channels=("Pz",), shuffle=False)
    assert [tuple(w["window"].shape) for w in corpus] == [(1, 500)] * 4
    # As many channels in another order: by position they would mix electrodes.
    _write_fif(tmp_path / "c_raw.fif", ["Pz", "Cz", "Fz"], _signal(2, 3, 1000))
    with pytest.raises(
        ValueError,
        match=r"c_raw.fif and a_raw.fif have other channel names or orders, and channels is "
        r"None\. Pass channels=\[names\] .*; the 3 they share are \['Fz', 'Cz', 'Pz'\]\.",
    ):
        WindowDataset([files[0], tmp_path / "c_raw.fif"], 0.5)
    with pytest.raises(
        ValueError,
        match=r"a_raw.fif lacks channel\(s\) \['Oz'\] of 'channels'\. Pass only channels that "
        r"every file has: the 3 they share are \['Fz', 'Cz', 'Pz'\]\.",
    ):
        WindowDataset(files, 0.5, channels=["Oz", "Fz"])
    _write_audio(tmp_path / "x.wav", _signal(3, 2, 1000))
    with pytest.raises(ValueError, match=r"'channels' lists channel names, but x.wav names none"):
        WindowDataset([files[0], tmp_path / "x.wav"], 0.5, channels=["Fz"])
    for bad in ([], ["Fz", "Fz"], [1, 2]):
        with pytest.raises(
            ValueError, match=r"'channels' must be None, 'mean' or a list of distinct channel"
        ):
            WindowDataset(files, 0.5, channels=bad)


def test_eeg_windows_leave_out_bad_channels_and_bad_annotations(tmp_path):
    # Audit: windows held info["bads"] channels and the samples under BAD_ annotations,
    # where fit and mne.make_fixed_length_epochs leave both out.
    import mne

    names = ["Fz", "Cz", "Pz", "EOG1"]
    info = mne.create_info(names, RATE, ["eeg", "eeg", "eeg", "eog"])
    raw = mne.io.RawArray(_signal(0, 4, 3000) * 1e-5, info, verbose="error")
    raw.info["bads"] = ["Cz"]
    # 1.2-1.3 s bad (windows 3, 4 and 5 of 0.5 s every 0.25 s overlap it); EDGE is not bad.
    raw.set_annotations(mne.Annotations([1.2, 2.0], [0.1, 0.2], ["BAD_blink", "EDGE x"]))
    raw.save(tmp_path / "s_raw.fif", verbose="error")
    stored = mne.io.read_raw_fif(tmp_path / "s_raw.fif", verbose="error").get_data()
    ds = WindowDataset([tmp_path / "s_raw.fif"], 0.5, hop_seconds=0.25)
    assert ds.n_channels == 2 and ds.n_windows == (8,) and ds.n_rejected == (3,)
    assert [ds[i]["u"] for i in range(len(ds))] == [0, 1, 2, 6, 7, 8, 9, 10]
    np.testing.assert_array_equal(ds[3]["window"].numpy(), stored[[0, 2], 1500:2000])
    epochs = mne.make_fixed_length_epochs(raw, 0.5, overlap=0.25, verbose="error")
    epochs.drop_bad(verbose="error")
    assert len(epochs) == len(ds)
    assert WindowDataset([tmp_path / "s_raw.fif"], 0.5, hop_seconds=0.25,
                         reject_by_annotation=False).n_windows == (11,)  # fmt: skip
    # Named channels are read whatever their type and state, as MNE's picks by name.
    named = WindowDataset([tmp_path / "s_raw.fif"], 0.5, channels=["EOG1", "Cz"])
    np.testing.assert_array_equal(named[0]["window"].numpy(), stored[[3, 1], :500])
    with pytest.raises(ValueError, match=r"'reject_by_annotation' parameter"):
        WindowDataset([tmp_path / "s_raw.fif"], 0.5, reject_by_annotation="yes")
    raw.set_annotations(mne.Annotations([0.0], [3.0], ["bad_all"]))
    raw.save(tmp_path / "all_raw.fif", verbose="error")
    with pytest.raises(ValueError, match=r"Every window of every recording in 'files' overlaps"):
        WindowDataset([tmp_path / "all_raw.fif"], 0.5)
    with pytest.warns(UserWarning, match=r"Skipped 1 recording\(s\) whose every window overlaps"):
        WindowDataset([tmp_path / "s_raw.fif", tmp_path / "all_raw.fif"], 0.5)
    raw.info["bads"] = ["Fz", "Cz", "Pz"]
    raw.save(tmp_path / "dead_raw.fif", verbose="error")
    with pytest.raises(ValueError, match=r"dead_raw.fif has no good EEG channel"):
        WindowDataset([tmp_path / "dead_raw.fif"], 0.5, reject_by_annotation=False)


def test_errors(tmp_path):
    _write_audio(tmp_path / "a.wav", _signal(0, 2, 1000))
    _write_audio(tmp_path / "mono.wav", _signal(0, 1, 1000))
    _write_audio(tmp_path / "fast.wav", _signal(0, 2, 1000), 2000)
    np.save(tmp_path / "x.npy", _signal(0, 2, 1000))
    np.save(tmp_path / "flat.npy", np.zeros(50, np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    (tmp_path / "notes.wav").write_text("not audio")
    (tmp_path / "notes.txt").write_text("hello")
    a = tmp_path / "a.wav"
    cases = [
        (TypeError, r"'files' must be a list of paths, got str", {"files": str(a)}),
        (ValueError, r"'files' is empty; pass at least one recording", {"files": []}),
        (FileNotFoundError, r"files\[1\] \(.*nope.wav\) does not exist", {"files": [a, "nope.wav"]}),
        (ValueError, r"Unsupported file extension '.txt' of files\[0\]", {"files": ["notes.txt"]}),
        (ValueError, r"'window_seconds' must be > 0.0, got 0.0", {"window_seconds": 0}),
        (ValueError, r"'window_seconds' must be > 0.0, got -1.0", {"window_seconds": -1}),
        (ValueError, r"'hop_seconds' must be > 0.0, got 0.0", {"hop_seconds": 0.0}),
        (ValueError, r"'hop_seconds' must be at most window_seconds \(0.5\)", {"hop_seconds": 1}),
        (ValueError, r"'window_seconds' \(0.0001 s\) is shorter than one sample at 1000.0 Hz", {"window_seconds": 1e-4}),
        (ValueError, r"'rank' must be in \[0, world_size\) = \[0, 2\), got 2", {"rank": 2, "world_size": 2}),
        (ValueError, r"Pass both 'rank' and 'world_size', or neither", {"rank": 1}),
        (ValueError, r"'seed' must be >= 0, got -1", {"seed": -1}),
        (ValueError, r"different sample rates \[1000.0, 2000.0\] Hz and sample_rate is None. Pass sample_rate \(e.g. sample_rate=1000, the lowest", {"files": [a, "fast.wav"]}),
        (ValueError, r"\.npy files carry no sample rate \(x.npy\); pass sample_rate", {"files": [a, "x.npy"]}),
        (ValueError, r"mono.wav has 1 channels but a.wav has 2, and channels is None\. Pass channels='mean'", {"files": [a, "mono.wav"]}),
        (ValueError, r"'channels' must be None, 'mean' or a list of channel names, got 'left'\. For that one channel pass channels=\['left'\]\.", {"channels": "left"}),
        (ValueError, r"junk.npy is not a readable .npy array", {"files": ["junk.npy"], "sample_rate": 1000}),
        (ValueError, r"flat.npy holds an array of shape \(50,\)", {"files": ["flat.npy"], "sample_rate": 1000}),
        (ValueError, r"Could not open .*notes.wav with soundfile", {"files": ["notes.wav"]}),
        (ValueError, r"drop_last=True leaves no window for any rank: the corpus has 2 windows for world_size 3", {"drop_last": True, "rank": 0, "world_size": 3}),
        (ValueError, r"Invalid value for the 'shuffle' parameter. Allowed values are True and False, but got 'no'", {"shuffle": "no"}),
        (ValueError, r"Invalid value for the 'drop_last' parameter. Allowed values are True and False", {"drop_last": "yes"}),
    ]  # fmt: skip
    for exc, match, kw in cases:
        kw = {"files": [a], "window_seconds": 0.5, **kw}
        kw["files"] = (
            kw["files"] if isinstance(kw["files"], str) else [tmp_path / f for f in kw["files"]]
        )
        files, window = kw.pop("files"), kw.pop("window_seconds")
        with pytest.raises(exc, match=match):
            WindowCorpus(files, window, **kw)
    corpus = WindowCorpus([a], 0.5)
    with pytest.raises(ValueError, match=r"'state' must be a dict with the keys \['epoch', 'pos"):
        corpus.load_state_dict({"epoch": 0})


def _gather_ranks(rank: int, init_file: str, files: list[str], out: str) -> None:
    """One rank of a 2-process gloo group: iterate the corpus, gather every rank's windows."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        corpus = WindowCorpus(files, 0.25, sample_rate=RATE, seed=5)  # rank, world: the group
        keys = _keys(corpus)
        gathered = [None, None]
        dist.all_gather_object(gathered, (corpus.rank, corpus.world_size, keys))
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_two_gloo_ranks_read_disjoint_complete_parts(tmp_path):
    _write_audio(tmp_path / "a.wav", _signal(0, 2, 1300))  # 5 windows of 250
    np.save(tmp_path / "b.npy", _signal(1, 2, 800))  # 3
    files = [str(tmp_path / "a.wav"), str(tmp_path / "b.npy")]
    out = tmp_path / "gathered.json"
    mp.spawn(_gather_ranks, args=(str(tmp_path / "init"), files, str(out)), nprocs=2, join=True)
    (r0, w0, keys0), (r1, w1, keys1) = json.loads(out.read_text())
    assert (r0, w0, r1, w1) == (0, 2, 1, 2)
    keys0, keys1 = {tuple(k) for k in keys0}, {tuple(k) for k in keys1}
    assert len(keys0) == len(keys1) == 4 and not keys0 & keys1
    assert keys0 | keys1 == {(0, u) for u in range(5)} | {(1, u) for u in range(3)}
    # The same parts as a corpus told its rank by hand.
    assert keys0 == set(
        _keys(WindowCorpus(files, 0.25, sample_rate=RATE, seed=5, rank=0, world_size=2))
    )


def test_a_rate_no_small_ratio_reaches_is_refused(tmp_path):
    # Audit: sample_rate=333.3 on a 250 Hz file resampled by 4/3 (333.33 Hz) and said 333.3.
    _write_audio(tmp_path / "a.wav", _signal(0, 1, 2000), rate=250)
    with pytest.raises(ValueError, match=r"sample_rate=333.3 Hz is no ratio .* to the 250 Hz of "
                       r"a.wav: windows would come at 333.333 Hz \(4/3\)"):  # fmt: skip
        WindowDataset([tmp_path / "a.wav"], 0.5, sample_rate=333.3)
    assert WindowDataset([tmp_path / "a.wav"], 0.5, sample_rate=1000 / 3).window_samples == 167


def test_resampled_windows_of_unfiltered_eeg_keep_their_edges(tmp_path):
    # Audit: resampled alone, a window of EEG with a 1 mV offset began 25 % off (the
    # filter met the window's edge); with context it equals the file resampled whole.
    mne = pytest.importorskip("mne")
    t = np.arange(512 * 12) / 512
    x = np.vstack([1e-3 + 1e-5 * np.sin(2 * np.pi * 10 * t), 2e-5 * np.cos(2 * np.pi * 7 * t)])
    raw = mne.io.RawArray(x, mne.create_info(["A", "B"], 512.0, "eeg"), verbose="error")
    raw.save(tmp_path / "r_raw.fif", verbose="error")
    ds = WindowDataset([tmp_path / "r_raw.fif"], 1.0, hop_seconds=0.75, sample_rate=256)
    whole = resample_poly(raw.get_data(), 1, 2, axis=1, padtype="line")
    for i in range(len(ds)):
        start = ds[i]["start"] // 2  # at 256 Hz
        # The file's own first samples meet the filter's edge either way (extended by
        # a line through the block read, or through the whole file): left out.
        keep = slice(8 if start == 0 else 0, None)
        np.testing.assert_allclose(
            ds[i]["window"].numpy()[:, keep], whole[:, start : start + 256][:, keep],
            rtol=1e-5, atol=1e-9,
        )  # fmt: skip
