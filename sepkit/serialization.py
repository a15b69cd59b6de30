"""The separator file: one schema, versioned, for every model family.

A separator is one safetensors file (no pickle is ever executed): the
family's tensors, and JSON metadata under the key ``"sepkit"`` holding

- ``format_version`` (this module's ``FORMAT_VERSION``) and ``sepkit_version``;
- ``params``: the estimator's constructor arguments;
- the estimator's own fitted attributes (``n_sources_``, ``n_channels_``,
  ``sample_rate_``, ``ch_names_``, ``exclude``, how u was read; since
  2026-12-07 also ``n_samples_``, ``reject_``, ``mixing_phase_`` and the fitted
  channels' ``info_`` as JSON, as MNE's ``-ica.fif`` keeps them);
- the family's state (:meth:`sepkit.methods.base.Fitted.state`), which also
  says which family wrote it (``domain_``, ``mixing_``);
- ``sha256`` (format 2): the digest of everything above and of the tensors
  (:func:`state_digest`), so that a flipped byte or an edited value is found
  on load instead of giving wrong sources.

Loading checks the digest (where the file has one), that every weight is
finite, and every metadata value the loader reads; each error names the file
and what is wrong. Files of format 1 (every release before the digest, the
shipped pretrained models included, whose own sha256 ``sepkit.registry``
checks) load unchanged, with the same checks but the digest;
``tests/test_serialization.py`` holds one per family.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from safetensors import safe_open

from ._atomic import atomic_write
from ._check import POSTERIORS, PRIORS, check_device, nonfinite_count
from ._lazy import LazyModule, torch
from ._version import __version__
from .methods import FAMILIES, MIXINGS, _time, load_family

# The safetensors writers of torch and numpy states, imported when a file is written
# (a numpy state, the linear family's, is written without importing torch).
_safetensors_torch = LazyModule("safetensors.torch")
_safetensors_numpy = LazyModule("safetensors.numpy")
# 2: the metadata holds "sha256" (format 1 files, without it, still load).
# 3: the linear family holds its matrices ("linear.*" tensors) instead of a
# network's weights ("model.*"); formats 1 and 2 still load.
FORMAT_VERSION = 3
MODEL_SUFFIX = ".safetensors"
DIGEST_KEY = "sha256"
# The IVAESeparator settings a file's "params" may hold: every family lists
# the constructor arguments it reads (sepkit.methods.base), together all of them.
_DOMAINS = ("time", "tf")
_PRIORS = (*PRIORS, *_time.LINEAR_PRIORS)
_MIXINGS = tuple(MIXINGS)
_TF_MODEL_KEYS = ("n_freqs", "n_sources", "n_segments", "n_latent", "n_hidden")
_UNWARP_TENSORS = ("sensor_mean_", "sensor_scale_", "sensor_coefs_")
_FIX = "Refit the model and save it again, or restore the file from a backup."


class _Invalid(Exception):
    """What is wrong with a file's contents (the caller adds the file and the fix)."""


def check_model_path(path, what: str = "path") -> Path:
    """``path`` as a Path, if its name ends in ``.safetensors`` (raises ValueError else).

    ``what`` names the argument in the message (``"-o"`` for the command line).
    """
    path = Path(path).expanduser()  # as MNE and the streaming writers take "~/x"
    if path.suffix != MODEL_SUFFIX:
        # MNE's ICA file: a linear separator exports to one (to_mne_ica), but saves as its own.
        ica = (
            " For an MNE ICA file of a linear separator, save its export: "
            "sep.to_mne_ica().save(path)."
            if path.name.lower().endswith(("-ica.fif", "_ica.fif", "-ica.fif.gz", "_ica.fif.gz"))
            else ""
        )
        raise ValueError(
            f"{what} must end in {MODEL_SUFFIX} (a separator is saved as a safetensors "
            f"file), got {str(path)!r}. Name it e.g. {path.stem or 'model'}{MODEL_SUFFIX}.{ica}"
        )
    return path


def state_digest(tensors: dict, meta: dict) -> str:
    """sha256 (hex) of a separator's tensors and metadata, as stored under ``"sha256"``.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor or ndarray
        Every tensor of the file. Each adds its name, dtype, shape and bytes,
        in sorted name order (the order of a dict is not part of the file); a
        numpy array gives the digest of the tensor it is stored as.
    meta : dict
        The JSON metadata; its ``"sha256"`` key, if any, is left out. Keys are
        sorted, so the digest does not depend on their order in the file.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    h = hashlib.sha256(b"sepkit separator\n")
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, np.ndarray):
            t = np.ascontiguousarray(t)
            data, dtype = t.reshape(-1).view(np.uint8), t.dtype.name
        else:
            t = t.detach().cpu().contiguous()
            data = t.reshape(-1).view(torch.uint8).numpy()
            dtype = str(t.dtype).removeprefix("torch.")
        h.update(json.dumps([name, dtype, list(t.shape), data.nbytes]).encode() + b"\n")
        h.update(memoryview(data))
    body = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def write_separator(path: Path, params: dict, fitted, estimator_meta: dict) -> Path:
    """Write ``fitted`` (a :class:`~sepkit.methods.base.Fitted`) atomically to ``path``.

    The file gets the digest of its contents (since format 2). A state that
    :func:`read_separator` would refuse (non-finite weights, an invalid
    value) raises ValueError and nothing is written.
    """
    tensors, meta = fitted.state()
    numpy_state = all(isinstance(v, np.ndarray) for v in tensors.values())
    if numpy_state:  # the linear family: written without torch
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    else:
        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in tensors.items()
        }
    header = dict(
        format_version=FORMAT_VERSION,
        sepkit_version=__version__,
        params={k: _plain(k, v) for k, v in params.items()},
        **meta,
        **estimator_meta,
    )
    # Every file names its family (older ones are told by their domain and mixing).
    header.setdefault("family_", fitted.family)
    # Check and digest what a reader will get back (JSON turns tuples into lists).
    header = json.loads(json.dumps(header))
    try:
        # params come from the estimator's get_params: its settings, known by construction.
        _check_contents(header, tensors, check_params=False)
    except _Invalid as err:
        raise ValueError(
            f"Cannot save the separator to {path}: {err}. Nothing was written. {_FIX}"
        ) from None
    header[DIGEST_KEY] = state_digest(tensors, header)
    with atomic_write(path) as tmp:
        writer = _safetensors_numpy if numpy_state else _safetensors_torch
        try:
            writer.save_file(tensors, str(tmp), metadata={"sepkit": json.dumps(header)})
        except OSError:
            raise
        except Exception as err:  # safetensors' own error type for a failed write
            # As an OSError, which callers (the command line) report as the disk's fault
            # (audit: a full disk was a SafetensorError traceback).
            raise OSError(f"could not write {path}: {err}") from err
    return path


def _plain(name: str, value):
    """``value`` as JSON holds it: paths (checkpoint_dir) as strings, numpy numbers as Python's.

    A setting from ``np.arange`` or a ParameterGrid is a numpy scalar, which
    fit takes and JSON does not.
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"Cannot save the separator: its setting {name}={value!r} ({type(value).__name__}) "
        "has no file form. Pass numbers, strings, lists or dicts of them, e.g. "
        f"set_params({name.split('[')[0]}=...)."
    )


def read_separator(path) -> tuple[dict, dict]:
    """(meta, tensors) of a separator file, checked; errors name the file and what is wrong.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a separator file; a newer format; contents that do not match the
        stored digest ("corrupt or changed"); non-finite weights; a missing,
        mistyped or out-of-range metadata value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No saved separator at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a sepkit separator file: {err}") from None
    if "sepkit" not in header:
        config = path.parent / "config.json"
        hint = ""
        if config.is_file() and '"source_model"' in config.read_text(errors="replace"):
            hint = (
                f" Its folder holds the source model {path.parent.name!r} (a prior over speech, "
                "not a separator): fit one with it, IVAESeparator(n_sources=k, "
                f"source_model={path.parent.name!r}).fit(recording)."
            )
        raise ValueError(f"{path} is a safetensors file but holds no sepkit separator.{hint}")
    try:
        meta = json.loads(header["sepkit"])
    except ValueError as err:
        raise ValueError(
            f"{path} is not a valid sepkit separator: its metadata is not valid JSON ({err}). "
            f"The file is corrupt or was edited. {_FIX}"
        ) from None
    try:
        version = _check_version(meta)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by sepkit {meta.get('sepkit_version')} in format "
                f"{version}, newer than this sepkit's {FORMAT_VERSION}; upgrade sepkit to "
                "load it."
            )
        _check_digest(path, meta, tensors, version)
        _check_contents(meta, tensors)
    except _Invalid as err:
        raise ValueError(f"{path} is not a valid sepkit separator: {err}. {_FIX}") from None
    return meta, tensors


def fitted_from_state(meta: dict, tensors: dict, params: dict, device, *, path=None):
    """The family's :class:`~sepkit.methods.base.Fitted` saved in ``meta``/``tensors``.

    ``meta`` and ``tensors`` come from :func:`read_separator`. Weights that
    do not fit the settings (e.g. ``params`` edited in a format-1 file) raise
    a ValueError that names ``path`` where given.
    """
    family = load_family(_family_name(meta))
    if device is not None and "device" in getattr(family, "HOOKS", ()):
        check_device(device)  # a device this machine lacks is the caller's error, not the file's
    try:
        return family.from_state(tensors, meta, params, device)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        what = " ".join(str(err).split())  # torch's load_state_dict message spans lines
        if len(what) > 400:
            what = what[:400] + "..."
        where = path if path is not None else "The saved separator"
        raise ValueError(
            f"{where} holds weights that do not fit its settings ({type(err).__name__}: "
            f"{what}). The file is corrupt or was edited. {_FIX}"
        ) from None


def _family_name(meta: dict) -> str:
    """The family that wrote a file: its ``family_``, or (older files) its domain and mixing."""
    if meta.get("family_") is not None:  # checked by _check_contents: one of FAMILIES
        return meta["family_"]
    if meta.get("domain_") == "tf":
        return "tf"
    # Files from before the mixing option hold a network.
    return MIXINGS.get(meta.get("mixing_", "nonlinear"), "network")


def known_params() -> frozenset:
    """The IVAESeparator settings a file's "params" may hold: those every family reads."""
    return frozenset().union(*(load_family(name).PARAMS for name in FAMILIES))


# ------------------------------------------------------------------ checks
def _check_version(meta) -> int:
    if not isinstance(meta, dict):
        raise _Invalid(f"its metadata must be a JSON object, got {type(meta).__name__}")
    return _int(meta, "format_version", 1)


def _check_digest(path, meta: dict, tensors: dict, version: int) -> None:
    """The stored digest against the contents; format 2 and later must have one."""
    if DIGEST_KEY not in meta:
        if version >= 2:
            raise _Invalid(
                f"format {version} stores a {DIGEST_KEY!r} digest of the contents, but the "
                "key is missing; the file is corrupt or was edited"
            )
        return  # format 1: written before the digest
    stored = meta[DIGEST_KEY]
    if not (isinstance(stored, str) and len(stored) == 64):
        raise _Invalid(f"{DIGEST_KEY!r} must be 64 hex digits, got {stored!r}")
    actual = state_digest(tensors, meta)
    if actual != stored.lower():
        raise ValueError(
            f"{path} is corrupt or changed; its contents do not match the sha256 digest "
            f"stored when it was saved (stored {stored[:12]}..., now {actual[:12]}...). "
            "Restore the file from a backup, or refit the model and save it again."
        )


def _check_contents(meta: dict, tensors: dict, *, check_params: bool = True) -> None:
    """Every metadata value the loader reads, the tensors it needs, and finite weights."""
    n_channels = _int(meta, "n_channels_", 1)
    _check_estimator_meta(meta, n_channels, check_params)
    family = meta.get("family_")
    if family is not None and family not in FAMILIES:
        raise _Invalid(
            f"'family_' must be one of {', '.join(repr(f) for f in FAMILIES)}, got "
            f"{_short(family)}: a model family this sepkit does not know (a file from a "
            "newer sepkit, or from a family added elsewhere; load it with the sepkit that "
            "wrote it)"
        )
    domain = _choice(meta, "domain_", _DOMAINS, default="time")
    if domain == "tf" and meta.get("family_") == "tf_pretrained":
        _check_tf_pretrained_state(meta, tensors, n_channels)
    elif domain == "tf":
        _check_tf_state(meta, tensors, n_channels)
    else:
        _check_time_state(meta, tensors, n_channels)
        if meta.get("family_") == "flow":
            _check_flow_config(meta)
    _check_finite(tensors)


def _check_flow_config(meta: dict) -> None:
    """The ``flow_config_`` object that :func:`sepkit.methods.flow.from_state` builds g from."""
    flow = load_family("flow")
    config = _value(meta, "flow_config_")
    if not isinstance(config, dict) or set(config) != set(flow.FIT_PARAMS):
        raise _Invalid(
            f"'flow_config_' must be an object with keys {list(flow.FIT_PARAMS)}, "
            f"got {_short(config)}"
        )
    try:
        flow.FlowConfig(**config).validate()
    except (TypeError, ValueError) as err:
        raise _Invalid(f"'flow_config_' is invalid ({err})") from None


def _check_estimator_meta(meta: dict, n_channels: int, check_params: bool = True) -> None:
    params = _value(meta, "params")
    if not isinstance(params, dict):
        raise _Invalid(f"'params' must be a JSON object of IVAESeparator settings, got {params!r}")
    # (known_params imports every family, torch's included: only a read needs it.)
    unknown = sorted(set(params) - known_params()) if check_params else []
    if unknown:
        raise _Invalid(
            f"'params' holds setting(s) {unknown} that IVAESeparator does not take "
            "(a file from another program, or edited)"
        )
    rate = _value(meta, "sample_rate_")
    if rate is not None and not (_finite_number(rate) and rate > 0):
        raise _Invalid(f"'sample_rate_' must be null or a finite number > 0 (Hz), got {rate!r}")
    names = _value(meta, "ch_names_")
    if names is not None and not (
        isinstance(names, list)
        and len(names) == n_channels
        and all(isinstance(n, str) for n in names)
    ):
        raise _Invalid(
            f"'ch_names_' must be null or a list of n_channels_={n_channels} strings, "
            f"got {_short(names)}"
        )
    history = _value(meta, "history_")
    if not (isinstance(history, list) and history and all(isinstance(h, dict) for h in history)):
        raise _Invalid(f"'history_' must be a non-empty list of objects, got {_short(history)}")
    for key in ("event_u_", "annotation_u_"):
        if not isinstance(meta.get(key, False), bool):
            raise _Invalid(f"{key!r} must be true or false, got {meta[key]!r}")
    # n_sources_ (the count fitted; files from before it hold an integer n_sources).
    n_sources = _int(meta, "n_sources_", 1) if "n_sources_" in meta else params.get("n_sources")
    _check_exclude(meta.get("exclude", []), n_sources)
    _check_fit_record(meta, names)


def _check_fit_record(meta: dict, names) -> None:
    """``n_samples_``, ``reject_``, ``mixing_phase_`` and ``info_``: each optional (null)."""
    count = meta.get("n_samples_")
    if count is not None and (isinstance(count, bool) or not isinstance(count, Integral)):
        raise _Invalid(f"'n_samples_' must be null or an integer, got {_short(count)}")
    if not isinstance(meta.get("fitted_on_epochs_", False), bool | None):
        raise _Invalid(
            f"'fitted_on_epochs_' must be true or false, got {_short(meta['fitted_on_epochs_'])}"
        )
    origin = meta.get("pretrained_")
    if origin is not None and not (
        isinstance(origin, dict)
        and {"name", "version", "sha256"}
        <= set(origin)
        <= {"name", "version", "sha256", "fine_tuned"}
    ):
        raise _Invalid(
            "'pretrained_' must be null or an object with 'name', 'version' and 'sha256' (and "
            f"'fine_tuned'), got {_short(origin)}"
        )
    phase = meta.get("mixing_phase_")
    if phase is not None and not _finite_number(phase):
        raise _Invalid(f"'mixing_phase_' must be null or a finite number, got {_short(phase)}")
    reject = meta.get("reject_")
    if reject is not None and not (
        isinstance(reject, dict) and all(_finite_number(v) for v in reject.values())
    ):
        raise _Invalid(f"'reject_' must be null or an object of numbers, got {_short(reject)}")
    info = meta.get("info_")
    keys = {"sfreq", "ch_names", "ch_types", "highpass", "lowpass", "montage"}
    if info is not None and not (
        isinstance(info, dict)
        and set(info) == keys
        and info["ch_names"] == names
        and isinstance(info["ch_types"], list)
        and len(info["ch_types"]) == len(info["ch_names"])
        and all(_finite_number(info[k]) for k in ("sfreq", "highpass", "lowpass"))
        and (info["montage"] is None or isinstance(info["montage"], dict))
    ):
        raise _Invalid(
            f"'info_' must be null or an object with keys {sorted(keys)} for the channels "
            f"'ch_names_', got {_short(info)}"
        )


def _finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)


def _check_exclude(exclude, n_sources) -> None:
    if not isinstance(exclude, list) or any(
        isinstance(k, bool) or not isinstance(k, Integral) or k < 0 for k in exclude
    ):
        raise _Invalid(
            f"'exclude' must be a list of source indices (integers >= 0), got {exclude!r}"
        )
    if isinstance(n_sources, Integral) and any(k >= n_sources for k in exclude):
        raise _Invalid(
            f"'exclude' holds source index {max(exclude)} but the model has {n_sources} "
            "sources ('n_sources' in 'params'); "
            f"allowed indices are 0 to {n_sources - 1}"
        )


def _check_time_state(meta: dict, tensors: dict, n_channels: int) -> None:
    """What :func:`sepkit.methods._time.from_state` reads (network and linear families)."""
    prior = _choice(meta, "prior_", _PRIORS)
    _choice(meta, "posterior_", POSTERIORS)
    _choice(meta, "mixing_", _MIXINGS, default="nonlinear")  # files from before the option
    _int(meta, "window_samples_", 1)
    if "hop_samples_" in meta:
        _int(meta, "hop_samples_", 1)
    n_segments = _int(meta, "n_segments_", 1, none=True)
    n_u = _int(meta, "n_u_", 1, none=True)
    if prior != "standard" and (n_segments is None) == (n_u is None):
        raise _Invalid(
            f"exactly one of 'n_segments_' (discrete u) and 'n_u_' (continuous u) must be "
            f"set for prior_={prior!r}, got n_segments_={n_segments!r} and n_u_={n_u!r}"
        )
    classes = _value(meta, "classes_")
    if classes is not None and not (
        isinstance(classes, list) and classes and all(_is_label(c) for c in classes)
    ):
        raise _Invalid(
            f"'classes_' must be null or a non-empty list of labels, got {_short(classes)}"
        )
    mean = meta.get("source_mean_", [])
    if not (isinstance(mean, list) and all(_is_finite_number(m) for m in mean)):
        raise _Invalid(f"'source_mean_' must be a list of finite numbers, got {_short(mean)}")
    _check_time_tensors(tensors, n_channels)


def _check_time_tensors(tensors: dict, n_channels: int) -> None:
    mean, whitening, dewhitening = (
        _tensor(tensors, k) for k in ("mean_", "whitening_", "dewhitening_")
    )
    rank = whitening.shape[0] if whitening.ndim == 2 else -1
    for name, t, shape in (
        ("mean_", mean, (n_channels,)),
        ("whitening_", whitening, (rank, n_channels)),
        ("dewhitening_", dewhitening, (n_channels, rank)),
    ):
        if tuple(t.shape) != shape:
            raise _Invalid(
                f"tensor {name!r} must have shape {shape} for n_channels_={n_channels}, "
                f"got {tuple(t.shape)}"
            )
    present = [k for k in _UNWARP_TENSORS if k in tensors]
    if present and len(present) != len(_UNWARP_TENSORS):
        missing = sorted(set(_UNWARP_TENSORS) - set(present))
        raise _Invalid(f"the sensor unwarping tensors {missing} are missing")
    if "linear.unmixing" in tensors:  # the linear family, format 3
        _check_linear_tensors(tensors, rank)
    elif not any(k.startswith("model.") for k in tensors):
        raise _Invalid(
            "the file holds no 'model.' tensors (the network weights) and no "
            "'linear.unmixing' (the linear model)"
        )


def _check_linear_tensors(tensors: dict, rank: int) -> None:
    """The shapes of a linear fit's matrices (:func:`sepkit.methods.linear.from_state`)."""
    n_sources = _tensor(tensors, "linear.unmixing").shape[0]
    shapes = {
        "linear.unmixing": (n_sources, rank),
        "linear.bias": (n_sources,),
        "linear.mixing": (rank, n_sources),
        "linear.decoder_bias": (rank,),
        "linear.noise_var": (rank,),
    }
    if "linear.segment_mean" in tensors or "linear.segment_var" in tensors:
        n_segments = _tensor(tensors, "linear.segment_mean").shape[0]
        shapes["linear.segment_mean"] = shapes["linear.segment_var"] = (n_segments, n_sources)
    for name, shape in shapes.items():
        if tuple(_tensor(tensors, name).shape) != shape:
            raise _Invalid(
                f"tensor {name!r} must have shape {shape} (n_sources={n_sources}, rank={rank}), "
                f"got {tuple(tensors[name].shape)}"
            )


def _check_stft_info(meta: dict) -> tuple[dict, int]:
    """The ``tf_`` object (STFT and rate) of a time-frequency fit, and its n_fft."""
    info = _value(meta, "tf_")
    if not isinstance(info, dict):
        raise _Invalid(f"'tf_' must be a JSON object, got {_short(info)}")
    n_fft = _int(info, "n_fft", 1, where="tf_")
    _int(info, "hop", 1, where="tf_")
    rate = _value(info, "sample_rate", where="tf_")
    if not (_is_finite_number(rate) and rate > 0):
        raise _Invalid(f"'tf_.sample_rate' must be a finite number > 0 (Hz), got {rate!r}")
    return info, n_fft


def _check_tf_pretrained_state(meta: dict, tensors: dict, n_channels: int) -> None:
    """What :func:`sepkit.methods.tf_pretrained.from_state` reads."""
    _, n_fft = _check_stft_info(meta)
    rate = _value(meta, "input_sample_rate_")
    if not (_is_finite_number(rate) and rate > 0):
        raise _Invalid(f"'input_sample_rate_' must be a finite number > 0 (Hz), got {rate!r}")
    source = _value(meta, "source_model_")
    if not (
        isinstance(source, dict)
        and isinstance(source.get("name"), str)
        and isinstance(source.get("sha256"), str)
    ):
        raise _Invalid(
            f"'source_model_' must be an object with a name and a sha256, got {_short(source)}"
        )
    real = _tensor(tensors, "tf.demix_real")
    if real.ndim != 3 or real.shape[0] != n_fft // 2 + 1 or real.shape[2] != n_channels:
        raise _Invalid(
            f"tensor 'tf.demix_real' must have shape (n_fft // 2 + 1, n_sources, n_channels_) "
            f"= ({n_fft // 2 + 1}, n_sources, {n_channels}), got {tuple(real.shape)}"
        )
    if tuple(_tensor(tensors, "tf.demix_imag").shape) != tuple(real.shape):
        raise _Invalid("tensors 'tf.demix_real' and 'tf.demix_imag' must have the same shape")


def _check_tf_state(meta: dict, tensors: dict, n_channels: int) -> None:
    """What :func:`sepkit.methods.tf.from_state` reads."""
    info, n_fft = _check_stft_info(meta)
    model = _value(info, "model", where="tf_")
    if not (isinstance(model, dict) and sorted(model) == sorted(_TF_MODEL_KEYS)):
        raise _Invalid(
            f"'tf_.model' must be an object with keys {list(_TF_MODEL_KEYS)}, got {_short(model)}"
        )
    for key in _TF_MODEL_KEYS:
        _int(model, key, 1, where="tf_.model")
    if model["n_freqs"] != n_fft // 2 + 1:
        raise _Invalid(
            f"'tf_.model.n_freqs' must be n_fft // 2 + 1 = {n_fft // 2 + 1} for "
            f"n_fft={n_fft}, got {model['n_freqs']}"
        )
    shape = (model["n_freqs"], model["n_sources"], n_channels)
    for name in ("tf.demix_real", "tf.demix_imag"):
        if tuple(_tensor(tensors, name).shape) != shape:
            raise _Invalid(
                f"tensor {name!r} must have shape (n_freqs, n_sources, n_channels_) = {shape}, "
                f"got {tuple(tensors[name].shape)}"
            )


def _check_finite(tensors: dict) -> None:
    for name in sorted(tensors):
        t = tensors[name]
        bad = nonfinite_count(t)  # a numpy state (the linear family) is checked before writing
        if bad:
            size = t.size if isinstance(t, np.ndarray) else t.numel()
            raise _Invalid(
                f"tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of {size}; "
                "a model with non-finite weights gives NaN sources (the fit that wrote it "
                "diverged, or the file was damaged)"
            )


# ----------------------------------------------------------------- helpers
_MISSING = object()


def _value(d: dict, key: str, default=_MISSING, *, where: str = ""):
    label = f"{where}.{key}" if where else key
    if key not in d:
        if default is _MISSING:
            raise _Invalid(f"the metadata key {label!r} is missing")
        return default
    return d[key]


def _int(d: dict, key: str, minimum: int, *, none: bool = False, where: str = ""):
    value = _value(d, key, where=where)
    label = f"{where}.{key}" if where else key
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        kind = "an integer or null" if none else "an integer"
        raise _Invalid(f"{label!r} must be {kind}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise _Invalid(f"{label!r} must be >= {minimum}, got {value}")
    return int(value)


def _choice(d: dict, key: str, allowed: tuple, default=_MISSING):
    value = _value(d, key, default)
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise _Invalid(f"{key!r} must be one of {names}, got {value!r}")
    return value


def _tensor(tensors: dict, name: str):
    if name not in tensors:
        raise _Invalid(f"the tensor {name!r} is missing")
    return tensors[name]


def _is_finite_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, Real) and math.isfinite(x)


def _is_label(x) -> bool:
    return isinstance(x, (str, bool, Integral)) or _is_finite_number(x)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
