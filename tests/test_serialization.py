"""Files written by earlier releases load and give the same outputs.

tests/data/format1/ holds separators of every family saved by the code before
the methods/ refactor (format 1), with the outputs that code gave
(make_fixtures.py there wrote both); the shipped pretrained models are checked
on a fixed input the same way.

Files written now (format 3) carry a sha256 digest of their contents (since
format 2) and hold the linear family's matrices ("linear.*", since format 3;
formats 1 and 2 held them as network weights, "model.*"); loading checks the
digest, refuses non-finite weights and checks every metadata value, with
errors that name the file (the rest of this module).
"""

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sepkit import IVAESeparator
from sepkit import functional_tf as F
from sepkit.cli import main as cli_main
from sepkit.io import Recording
from sepkit.serialization import (
    FORMAT_VERSION,
    fitted_from_state,
    known_params,
    read_separator,
    state_digest,
)

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
    _check_outputs(sep, name)


def _check_outputs(sep, name):
    """``sep`` gives the outputs the format-1 fixture ``name`` gave when it was written."""
    expected = dict(np.load(HERE / f"{name}_expected.npz"))
    rec, u = _inputs(name)
    S = sep.transform(rec, u).data
    if name == "tf":
        # Since 2026-12-07 the tf families separate the centred channels: the fixture's
        # outputs less what its demixing made of the channels' means (no post-filter,
        # so the demixing is linear in the recording).
        d = sep.tf_
        means = np.broadcast_to(rec.data.mean(axis=1, keepdims=True), rec.data.shape)
        X = F.stft(torch.from_numpy(np.ascontiguousarray(means, np.float32)), d.n_fft, d.hop)
        dc = F.istft(torch.from_numpy(d.demix) @ X, d.n_fft, d.hop, rec.n_times).numpy()
        expected["sources"] = expected["sources"] - dc[:, ::16]
        expected["reconstruction"] = (
            expected["reconstruction"] - sep.inverse_transform(dc, u)[:, ::16]
        )
        # Away from the edges, where chunked separation pads the constant otherwise.
        keep = slice(d.n_fft // 16 + 1, -(d.n_fft // 16 + 1))
    else:
        keep = slice(None)
    scale = np.abs(expected["sources"]).max()
    got, want = S[:, ::16][:, keep], expected["sources"][:, keep]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
    rebuilt = sep.inverse_transform(S, u)[:, ::16][:, keep]
    scale = np.abs(expected["reconstruction"]).max()
    want = expected["reconstruction"][:, keep]
    np.testing.assert_allclose(rebuilt, want, rtol=1e-5, atol=1e-6 * scale)
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
    # The same for the components (the network family's are computed from float32
    # sums): one entry of 3.9e-3 moved by 6.7e-8 on an AMD EPYC machine.
    scale = np.abs(expected["components"]).max()
    np.testing.assert_allclose(
        sep.get_components(), expected["components"], rtol=1e-5, atol=1e-6 * scale
    )


# ------------------------------------------------------ digest and checks on load
def _contents(path):
    """(meta, tensors) as stored, without any check."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["sepkit"]), {k: f.get_tensor(k) for k in f.keys()}


def _resaved(tmp_path, name="linear"):
    """The format-1 fixture ``name`` loaded and saved again (the current format, with a digest)."""
    sep = IVAESeparator.load(HERE / f"{name}.safetensors", device="cpu")
    return sep.save(tmp_path / f"{name}_v{FORMAT_VERSION}.safetensors")


def _rewrite(src, dst, edit_meta=None, edit_tensors=None, *, digest=True):
    """Copy ``src`` to ``dst`` with edits; ``digest``: store the digest of the edited file."""
    meta, tensors = _contents(src)
    if edit_meta is not None:
        edit_meta(meta)
    if edit_tensors is not None:
        edit_tensors(tensors)
    if digest and "sha256" in meta:
        meta["sha256"] = state_digest(tensors, meta)
    save_file(tensors, str(dst), metadata={"sepkit": json.dumps(meta)})
    return dst


def _source(tmp_path, name, fmt):
    """A file of family ``name`` in format ``fmt`` (1: the fixture, no digest; else the current)."""
    return HERE / f"{name}.safetensors" if fmt == 1 else _resaved(tmp_path, name)


def _refused(path, match):
    """read_separator's ValueError for ``path``: it names the file, then ``match``."""
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} .*{match}") as err:
        read_separator(path)
    assert "\n" not in str(err.value)  # the command line prints one line


def _set(**values):
    return lambda d: d.update(values)


def _pop(*keys):
    def edit(d):
        for k in keys:
            d.pop(k)

    return edit


def _set_tf(**values):
    return lambda m: m["tf_"].update(values)


def _set_tf_model(**values):
    return lambda m: m["tf_"]["model"].update(values)


@pytest.mark.parametrize("name", FAMILIES)
def test_saved_file_has_a_digest_and_round_trips(tmp_path, name):
    path = _resaved(tmp_path, name)
    meta, tensors = _contents(path)
    assert meta["format_version"] == FORMAT_VERSION == 3
    # The linear family's matrices, not a network's weights (format 3).
    linear = name in ("linear", "gengauss", "post_nonlinear")
    assert any(k.startswith("linear.") for k in tensors) == linear
    assert any(k.startswith("model.") for k in tensors) == (not linear)
    assert re.fullmatch("[0-9a-f]{64}", meta["sha256"])
    assert meta["sha256"] == state_digest(tensors, meta)
    _check_outputs(IVAESeparator.load(path, device="cpu"), name)


def test_fresh_fit_round_trips_with_a_digest(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.laplace(size=(2, 4000)) * np.repeat(rng.uniform(0.1, 1.0, (2, 8)), 500, axis=1)
    rec = Recording((np.array([[1.0, 0.6], [0.5, 1.0]]) @ s).astype(np.float32), 500.0)
    sep = IVAESeparator(2, mixing="linear", random_state=0).fit(rec)
    path = sep.save(tmp_path / "fresh.safetensors")
    meta, tensors = read_separator(path)
    assert meta["sha256"] == state_digest(tensors, meta)
    again = IVAESeparator.load(path, device="cpu")
    np.testing.assert_array_equal(again.transform(rec).data, sep.transform(rec).data)


def test_format1_fixtures_have_no_digest_and_load(tmp_path):
    # Every file written before the digest: read without one, with the other checks.
    for name in FAMILIES:
        meta, _ = read_separator(HERE / f"{name}.safetensors")
        assert meta["format_version"] == 1 and "sha256" not in meta


def test_digest_covers_names_dtypes_shapes_and_bytes_in_any_order():
    t = {"b": torch.arange(6, dtype=torch.float32), "a": torch.ones(2, dtype=torch.float64)}
    meta = {"x": 1, "y": [1.5, None]}
    d = state_digest(t, meta)
    assert d == state_digest(dict(reversed(list(t.items()))), {"y": [1.5, None], "x": 1})
    assert d == state_digest(t, {**meta, "sha256": "0" * 64})  # the digest itself is left out
    assert d != state_digest({**t, "b": t["b"].reshape(2, 3)}, meta)  # same bytes, other shape
    assert d != state_digest({**t, "b": t["b"].view(torch.int32)}, meta)  # same bytes, dtype
    assert d != state_digest({"c": t["b"], "a": t["a"]}, meta)  # same bytes, other name
    assert d != state_digest(t, {**meta, "x": 2})


def _tensor_byte_ranges(path):
    """name -> (first, end) byte offsets of each tensor's data in a safetensors file."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    return {
        k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__"
    }


@pytest.mark.parametrize("name", ["network", "post_nonlinear", "tf"])
def test_a_flipped_byte_in_any_tensor_is_refused(tmp_path, name):
    path = _resaved(tmp_path, name)
    good = path.read_bytes()
    for first, end in _tensor_byte_ranges(path).values():
        if first == end:
            continue
        raw = bytearray(good)
        raw[(first + end) // 2] ^= 0x01  # one bit of one weight: still a finite number
        path.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="is corrupt or changed; its contents do not match"):
            read_separator(path)
    path.write_bytes(good)
    read_separator(path)


def test_an_edited_value_is_refused_even_when_valid(tmp_path):
    # 8000 -> 16000 Hz passes every metadata check; only the digest can tell.
    src = _resaved(tmp_path, "network")
    path = _rewrite(src, tmp_path / "edited.safetensors", _set(sample_rate_=16000.0), digest=False)
    _refused(path, r"is corrupt or changed; .*stored [0-9a-f]{12}\.\.\., now [0-9a-f]{12}\.\.\.")


def test_digest_cannot_be_dodged(tmp_path):
    src = _resaved(tmp_path)
    dst = tmp_path / "x.safetensors"
    # The current format without its digest.
    _rewrite(src, dst, _pop("sha256"))
    _refused(dst, r"format 3 stores a 'sha256' digest of the contents, but the key is missing")
    # Marked format 1, the digest still there: it is still checked.
    _rewrite(src, dst, _set(format_version=1, sample_rate_=64.0), digest=False)
    _refused(dst, "is corrupt or changed")
    _rewrite(src, dst, _set(sha256=12), digest=False)
    _refused(dst, r"'sha256' must be 64 hex digits, got 12")


@pytest.mark.parametrize(
    ("fmt", "name", "tensor", "value"),
    [
        (1, "linear", "model.decoder_linear.weight", float("nan")),
        (3, "linear", "linear.mixing", float("nan")),
        (1, "tf", "tf.demix_real", np.inf),
        (3, "tf", "tf.demix_real", np.inf),
    ],
)
def test_non_finite_weights_are_refused(tmp_path, fmt, name, tensor, value):
    def poison(tensors):
        tensors[tensor].view(-1)[3] = value

    path = _rewrite(_source(tmp_path, name, fmt), tmp_path / "bad.safetensors", None, poison)
    _refused(path, rf"tensor '{re.escape(tensor)}' holds 1 non-finite value\(s\) \(NaN or inf\)")


def test_save_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    sep = IVAESeparator.load(HERE / "network.safetensors", device="cpu")
    with torch.no_grad():
        sep.fitted_.model.decoder.layers[0].bias[0] = float("nan")
    path = tmp_path / "nan.safetensors"
    with pytest.raises(
        ValueError, match=r"Cannot save the separator to .*nan\.safetensors: tensor "
    ):
        sep.save(path)
    assert list(tmp_path.iterdir()) == []


# (family, edit of the metadata, what the message says)
BAD_META = {
    "negative sample rate": (
        "linear",
        _set(sample_rate_=-8000.0),
        r"'sample_rate_' must be null or a finite number > 0 \(Hz\), got -8000\.0",
    ),
    "sample rate as text": ("network", _set(sample_rate_="8000"), r"'sample_rate_' must be null or a finite number > 0 \(Hz\), got '8000'"),
    "infinite sample rate": ("tf", _set(sample_rate_=float("inf")), r"'sample_rate_' must be null or a finite number > 0 \(Hz\), got inf"),
    "missing n_channels_": ("linear", _pop("n_channels_"), "the metadata key 'n_channels_' is missing"),
    "n_channels_ as text": ("linear", _set(n_channels_="6"), r"'n_channels_' must be an integer, got '6' \(str\)"),
    "zero channels": ("tf", _set(n_channels_=0), r"'n_channels_' must be >= 1, got 0"),
    "too few ch_names_": ("linear", _set(ch_names_=["EEG00"]), r"'ch_names_' must be null or a list of n_channels_=6 strings, got \['EEG00'\]"),
    "ch_names_ not strings": ("network", _set(ch_names_=[0, 1]), r"'ch_names_' must be null or a list"),
    "empty history_": ("linear", _set(history_=[]), r"'history_' must be a non-empty list of objects, got \[\]"),
    "missing history_": ("tf", _pop("history_"), "the metadata key 'history_' is missing"),
    "missing params": ("linear", _pop("params"), "the metadata key 'params' is missing"),
    "params not an object": ("linear", _set(params=[3]), r"'params' must be a JSON object of IVAESeparator settings, got \[3\]"),
    "unknown setting": ("network", lambda m: m["params"].update(n_source=2), r"'params' holds setting\(s\) \['n_source'\] that IVAESeparator does not take"),
    "missing format_version": ("linear", _pop("format_version"), "the metadata key 'format_version' is missing"),
    "format_version as text": ("linear", _set(format_version="1"), r"'format_version' must be an integer, got '1' \(str\)"),
    "unknown domain_": ("tf", _set(domain_="freq"), r"'domain_' must be one of 'time', 'tf', got 'freq'"),
    "unknown prior_": ("linear", _set(prior_="gaus"), r"'prior_' must be one of 'gauss', 'laplace', 'standard', 'extended', 'gengauss', got 'gaus'"),
    "unknown posterior_": ("network", _set(posterior_=None), r"'posterior_' must be one of 'diag', 'full', got None"),
    "unknown mixing_": ("linear", _set(mixing_="linaer"), r"'mixing_' must be one of 'nonlinear', 'flow', 'linear', 'post-nonlinear', got 'linaer'"),
    "unknown family_": ("linear", _set(family_="sobi"), r"'family_' must be one of 'network', .*, got 'sobi': a model family this sepkit does not know \(a file from a newer sepkit"),
    "zero window": ("network", _set(window_samples_=0), r"'window_samples_' must be >= 1, got 0"),
    "fractional window": ("network", _set(window_samples_=2.5), r"'window_samples_' must be an integer, got 2\.5 \(float\)"),
    "negative hop": ("network", _set(hop_samples_=-1), r"'hop_samples_' must be >= 1, got -1"),
    "no u encoding": ("network", _set(n_segments_=None), r"exactly one of 'n_segments_' \(discrete u\) and 'n_u_' \(continuous u\) must be set"),
    "empty classes_": ("network_labels", _set(classes_=[]), r"'classes_' must be null or a non-empty list of labels, got \[\]"),
    "NaN source mean": ("network", _set(source_mean_=[float("nan"), 0.0]), r"'source_mean_' must be a list of finite numbers, got \[nan, 0\.0\]"),
    "exclude out of range": ("linear", _set(exclude=[7]), r"'exclude' holds source index 7 but the model has 3 sources"),
    "exclude not a list": ("linear", _set(exclude="0"), r"'exclude' must be a list of source indices \(integers >= 0\), got '0'"),
    "event_u_ as text": ("linear", _set(event_u_="yes"), r"'event_u_' must be true or false, got 'yes'"),
    "missing tf_": ("tf", _pop("tf_"), "the metadata key 'tf_' is missing"),
    "negative tf sample rate": ("tf", _set_tf(sample_rate=-8000.0), r"'tf_\.sample_rate' must be a finite number > 0 \(Hz\), got -8000\.0"),
    "zero hop": ("tf", _set_tf(hop=0), r"'tf_\.hop' must be >= 1, got 0"),
    "tf model key": ("tf", _set_tf_model(n_layers=2), r"'tf_\.model' must be an object with keys \['n_freqs', 'n_sources', 'n_segments', 'n_latent', 'n_hidden'\]"),
    "tf model n_freqs": ("tf", _set_tf_model(n_freqs=1000), r"'tf_\.model\.n_freqs' must be n_fft // 2 \+ 1 = 1025 for n_fft=2048, got 1000"),
    "tf model as text": ("tf", _set_tf_model(n_latent="8"), r"'tf_\.model\.n_latent' must be an integer, got '8'"),
}  # fmt: skip


@pytest.mark.parametrize("fmt", [1, 3])
@pytest.mark.parametrize("case", list(BAD_META))
def test_bad_metadata_is_a_clear_error(tmp_path, fmt, case):
    name, edit, match = BAD_META[case]
    path = _rewrite(_source(tmp_path, name, fmt), tmp_path / "bad.safetensors", edit)
    _refused(path, f"is not a valid sepkit separator: {match}")


def _pop_tensor(name):
    return lambda t: t.pop(name)


BAD_TENSORS = {
    "missing mean_": ("linear", _pop_tensor("mean_"), r"the tensor 'mean_' is missing"),
    "whitening_ for other channels": (
        "linear",
        lambda t: t.update(whitening_=t["whitening_"][:, :5].contiguous()),
        r"tensor 'whitening_' must have shape \(6, 6\) for n_channels_=6, got \(6, 5\)",
    ),
    "half the unwarping": (
        "post_nonlinear",
        _pop_tensor("sensor_coefs_"),
        r"the sensor unwarping tensors \['sensor_coefs_'\] are missing",
    ),
    "no network": (
        "linear",
        lambda t: [t.pop(k) for k in list(t) if k.startswith(("model.", "linear."))],
        r"the file holds no 'model\.' tensors \(the network weights\) and no "
        r"'linear\.unmixing' \(the linear model\)",
    ),
    "demixing of other shape": (
        "tf",
        lambda t: t.update({"tf.demix_imag": t["tf.demix_imag"][:-1].contiguous()}),
        r"tensor 'tf\.demix_imag' must have shape \(n_freqs, n_sources, n_channels_\) = "
        r"\(1025, 2, 2\), got \(1024, 2, 2\)",
    ),
}


@pytest.mark.parametrize("fmt", [1, 3])
@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_missing_or_misshapen_tensors_are_a_clear_error(tmp_path, fmt, case):
    name, edit, match = BAD_TENSORS[case]
    path = _rewrite(_source(tmp_path, name, fmt), tmp_path / "bad.safetensors", None, edit)
    _refused(path, f"is not a valid sepkit separator: {match}")


def test_metadata_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"sepkit": '{"format_version": 2,'})
    _refused(path, r"is not a valid sepkit separator: its metadata is not valid JSON \(")
    save_file({"a": torch.zeros(2)}, str(path), metadata={"sepkit": "[2]"})
    _refused(path, r"its metadata must be a JSON object, got list")


def test_newer_format_asks_for_an_upgrade(tmp_path):
    path = _rewrite(_resaved(tmp_path), tmp_path / "x.safetensors", _set(format_version=4))
    _refused(path, r"in format 4, newer than this sepkit's 3; upgrade sepkit to load it\.$")


def test_linear_matrices_of_other_shapes_are_a_clear_error(tmp_path):
    def shrink(tensors):
        tensors["linear.mixing"] = tensors["linear.mixing"][:, :-1].contiguous()

    path = _rewrite(_resaved(tmp_path), tmp_path / "x.safetensors", None, shrink)
    _refused(
        path,
        r"tensor 'linear\.mixing' must have shape \(6, 3\) \(n_sources=3, rank=6\), got \(6, 2\)",
    )


def test_weights_that_do_not_fit_the_settings_are_a_clear_error(tmp_path):
    # A format-1 file (no digest) whose network size was edited: the weights no longer fit.
    src = HERE / "network.safetensors"
    path = _rewrite(src, tmp_path / "x.safetensors", lambda m: m["params"].update(n_hidden=32))
    with pytest.raises(ValueError, match=r"holds weights that do not fit its settings \(Runtime"):
        IVAESeparator.load(path, device="cpu")
    meta, tensors = read_separator(path)
    sep = IVAESeparator(**{**meta["params"], "device": "cpu"})
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} holds weights that do not"):
        fitted_from_state(meta, tensors, sep.get_params(), torch.device("cpu"), path=path)


def test_load_names_the_file(tmp_path):
    src = HERE / "linear.safetensors"
    path = _rewrite(src, tmp_path / "x.safetensors", _set(sample_rate_=-1.0))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a valid sepkit"):
        IVAESeparator.load(path, device="cpu")


@pytest.mark.parametrize(
    ("edit", "digest", "match"),
    [
        (_set(sample_rate_=16000.0), False, "is corrupt or changed"),
        (_pop("n_channels_"), True, "the metadata key 'n_channels_' is missing"),
        (_set(history_={"loss": 1}), True, "'history_' must be a non-empty list"),
    ],
)
def test_command_line_prints_one_line_for_a_bad_model(tmp_path, capsys, edit, digest, match):
    model = _rewrite(
        _resaved(tmp_path, "network"), tmp_path / "bad.safetensors", edit, None, digest=digest
    )
    wav = tmp_path / "a.wav"
    sf = pytest.importorskip("soundfile")
    sf.write(wav, np.zeros((800, 2), np.float32), 8000)
    out = tmp_path / "out"
    before = sorted(tmp_path.iterdir())
    rc = cli_main(["separate", str(wav), "--model", str(model), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.match(rf"sepkit separate: error: {re.escape(str(model))} .*{match}", err)
    assert sorted(tmp_path.iterdir()) == before  # nothing created


def test_every_constructor_setting_is_a_known_param():
    # A file's params are checked against the families' PARAMS (sepkit.methods);
    # a constructor argument missing there would make every saved model unloadable.
    own = set(inspect.signature(IVAESeparator.__init__).parameters) - {"self"}
    assert own == set(known_params())


def test_a_bad_setting_in_a_format1_file_is_the_estimators_error(tmp_path):
    # Format 2 refuses any edit by its digest; in a format-1 file the estimator
    # checks the values of params itself, with its usual messages.
    src = HERE / "linear.safetensors"
    path = _rewrite(src, tmp_path / "x.safetensors", lambda m: m["params"].update(prior="gaus"))
    with pytest.raises(ValueError, match=r"Invalid value for the 'prior' parameter\. Allowed"):
        IVAESeparator.load(path, device="cpu")
    path = _rewrite(
        _resaved(tmp_path), path, lambda m: m["params"].update(prior="gaus"), digest=False
    )
    _refused(path, "is corrupt or changed")


def test_numpy_number_settings_save_as_python_numbers(tmp_path):
    # Audit: settings from np.arange / ParameterGrid (numpy scalars) fitted, then save
    # failed with "Object of type int64 is not JSON serializable".
    from sepkit import IVAESeparator
    from sepkit.datasets import make_nonlinear_ica

    X, _, u = make_nonlinear_ica(3, 10, 200, n_layers=1, random_state=0)
    sep = IVAESeparator(
        n_sources=np.int64(3), mixing="linear", random_state=np.int64(0),
        window_overlap=np.float32(0.0),
    ).fit(X, u)  # fmt: skip
    path = sep.save(tmp_path / "m.safetensors")
    back = IVAESeparator.load(path)
    assert back.get_params()["n_sources"] == 3 and type(back.get_params()["n_sources"]) is int
    np.testing.assert_array_equal(back.transform(X, u), sep.transform(X, u))
    sep.set_params(fit_params={"weird": object()})
    with pytest.raises(ValueError, match=r"setting fit_params\['weird'\]=<object .* has no file"):
        sep.save(tmp_path / "n.safetensors")
    assert not (tmp_path / "n.safetensors").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_at_load_is_not_blamed_on_the_file(tmp_path):
    # Audit: load(..., device="cuda") without CUDA said the file was corrupt or edited.
    from sepkit.datasets import make_nonlinear_ica

    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    sep = IVAESeparator(2, mixing="nonlinear", n_hidden=8, n_steps=2, device="cpu").fit(X, u)
    path = sep.save(tmp_path / "net.safetensors")
    with pytest.raises(RuntimeError, match=r"CUDA is not available") as err:
        IVAESeparator.load(path, device="cuda")
    assert "corrupt" not in str(err.value)


def test_save_expands_the_home_folder_and_zero_channels_are_refused(tmp_path, monkeypatch):
    from sepkit.datasets import make_nonlinear_ica

    monkeypatch.setenv("HOME", str(tmp_path))
    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    sep = IVAESeparator(2, mixing="linear").fit(X, u)
    assert sep.save("~/m.safetensors") == tmp_path / "m.safetensors"
    assert IVAESeparator.load("~/m.safetensors").n_sources_ == 2
    with pytest.raises(ValueError, match=r"X has no channels \(shape \(0, 10\)\)"):
        IVAESeparator(2).fit(np.zeros((0, 10)))


def test_loading_the_source_model_weights_points_to_source_model():
    weights = Path(__file__).resolve().parents[1] / "pretrained" / "ivae-speech-16k-v1"
    with pytest.raises(ValueError, match=r"holds no sepkit separator\. Its folder holds the source "
                       r"model 'ivae-speech-16k-v1' .* source_model='ivae-speech-16k-v1'"):  # fmt: skip
        IVAESeparator.load(weights / "weights.safetensors")


def test_a_failed_write_is_an_oserror(tmp_path, monkeypatch):
    # Audit: a full disk was safetensors' own SafetensorError, a traceback on the command
    # line (which reports OSErrors in one line).
    import sepkit.serialization as ser
    from sepkit import IVAESeparator

    X = np.random.default_rng(0).standard_normal((2, 2000))
    sep = IVAESeparator(2, mixing="linear").fit(X)

    class SafetensorError(Exception):
        pass

    def full(*args, **kw):
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(ser._safetensors_numpy, "save_file", full)
    with pytest.raises(OSError, match=r"could not write .*m\.safetensors: Error while serializing"):
        sep.save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []
