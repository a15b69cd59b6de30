"""The separator file: one schema, versioned, for every model family.

A separator is one safetensors file (no pickle is ever executed): the
family's tensors, and JSON metadata under the key ``"sepkit"`` holding

- ``format_version`` (this module's ``FORMAT_VERSION``) and ``sepkit_version``;
- ``params``: the estimator's constructor arguments;
- the estimator's own fitted attributes (``n_channels_``, ``sample_rate_``,
  ``ch_names_``, ``exclude``, how u was read);
- the family's state (:meth:`sepkit.methods.base.Fitted.state`), which also
  says which family wrote it (``domain_``, ``mixing_``).

Files of format 1 (every release so far, the shipped pretrained models
included) load unchanged; ``tests/test_serialization.py`` holds one per family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from ._atomic import atomic_write
from ._version import __version__
from .methods import _time, tf

FORMAT_VERSION = 1
MODEL_SUFFIX = ".safetensors"


def check_model_path(path, what: str = "path") -> Path:
    """``path`` as a Path, if its name ends in ``.safetensors`` (raises ValueError else).

    ``what`` names the argument in the message (``"-o"`` for the command line).
    """
    path = Path(path)
    if path.suffix != MODEL_SUFFIX:
        raise ValueError(
            f"{what} must end in {MODEL_SUFFIX} (a separator is saved as a safetensors "
            f"file), got {str(path)!r}. Name it e.g. {path.stem or 'model'}{MODEL_SUFFIX}."
        )
    return path


def write_separator(path: Path, params: dict, fitted, estimator_meta: dict) -> Path:
    """Write ``fitted`` (a :class:`~sepkit.methods.base.Fitted`) atomically to ``path``."""
    tensors, meta = fitted.state()
    header = dict(
        format_version=FORMAT_VERSION,
        sepkit_version=__version__,
        # Paths (checkpoint_dir) as strings: JSON has no path type.
        params={k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in params.items()},
        **meta,
        **estimator_meta,
    )
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"sepkit": json.dumps(header)})
    return path


def read_separator(path) -> tuple[dict, dict]:
    """(meta, tensors) of a separator file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No saved separator at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a sepkit separator file: {err}") from None
    if "sepkit" not in header:
        raise ValueError(f"{path} is a safetensors file but holds no sepkit separator.")
    meta = json.loads(header["sepkit"])
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by sepkit {meta.get('sepkit_version')} in a newer format; "
            "upgrade sepkit to load it."
        )
    return meta, tensors


def fitted_from_state(meta: dict, tensors: dict, params: dict, device):
    """The family's :class:`~sepkit.methods.base.Fitted` saved in ``meta``/``tensors``."""
    if meta.get("domain_") == "tf":
        return tf.from_state(tensors, meta, params, device)
    # The network and linear families share the time-domain state.
    return _time.from_state(tensors, meta, params, device)
