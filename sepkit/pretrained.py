"""Pretrained separators shipped in the repository's ``pretrained/`` folder.

Each model lives in ``pretrained/<name>/``:

- ``weights.safetensors``: the separator written by :meth:`IVAESeparator.save`
  (safetensors, so loading never executes pickle);
- ``config.json``: name, version, kind, sample rate, channels, number of
  sources, the recipe command that produced it, held-out metrics, and the
  sha256 of the weights file, which is checked before anything is loaded;
- ``MODEL_CARD.md``: the same facts for people.

Nothing is downloaded: the models are small and kept in git. The folder is
found beside the package (an editable install or a checkout), or where the
``SEPKIT_PRETRAINED_DIR`` environment variable points.

Examples
--------
>>> from sepkit.pretrained import list_models
>>> "ivae-synthetic-5src-v1" in list_models()  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .registry import (
    _NAME_RE,
    CARD_FILE,
    CONFIG_FILE,
    MAX_MODEL_BYTES,
    PRETRAINED_ENV,
    WEIGHTS_FILE,
    list_models,
    model_info,
    pretrained_dir,
    sha256_file,
)
from .separator import IVAESeparator

__all__ = [
    "PRETRAINED_ENV",
    "export_model",
    "export_source_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "pretrained_dir",
    "sha256_file",
]


def load_pretrained(name_or_path, *, device: str = "auto"):
    """Load a shipped separator after checking its sha256.

    Parameters
    ----------
    name_or_path : str or path
        A name from :func:`list_models` (e.g. ``"ivae-synthetic-5src-v1"``)
        or a model folder with ``config.json`` and ``weights.safetensors``.
    device : str
        "auto", "cpu", "cuda" or "cuda:N".

    Returns
    -------
    sep : IVAESeparator
        Fitted; ``sample_rate_`` and ``ch_names_`` say what recordings it
        expects, ``pretrained_`` holds the model's name and version.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), or a weights file
        whose sha256 differs from the one in ``config.json`` (the file is then
        not read at all).
    """
    return IVAESeparator.from_pretrained(name_or_path, device=device)


# --------------------------------------------------------------------------- #
# Export (used by recipes/pretrained)
# --------------------------------------------------------------------------- #
def export_model(sep, name: str, *, root=None, config: dict | None = None, card: str = "") -> Path:
    """Write a fitted separator as a new model folder ``root/name``.

    The folder is assembled under a temporary name and renamed into place,
    and an existing ``root/name`` is never replaced: a released name is
    immutable, so a changed model needs a new version (``-v2``).

    Parameters
    ----------
    sep : IVAESeparator
        Fitted.
    name : str
        ``ivae-<what>-<details>-v<N>``, lower case.
    root : path or None
        Default :func:`pretrained_dir`.
    config : dict or None
        Extra config keys (kind, recipe, metrics, ...).
    card : str
        MODEL_CARD.md text; ``{sha256}`` in it is replaced by the digest.

    Returns
    -------
    folder : Path
    """
    meta = {
        "sample_rate": sep.sample_rate_,
        "n_channels": sep.n_channels_,
        "ch_names": list(sep.ch_names_) if sep.ch_names_ else None,
        "n_sources": sep.n_sources_,
        **(config or {}),
    }
    return _write_model_folder(
        name, root, sep.save, meta, card, "Use a smaller n_hidden or n_layers."
    )


def export_source_model(
    model,
    name: str,
    *,
    sample_rate: float,
    n_fft: int,
    hop: int,
    segment_frames: int,
    root=None,
    config: dict | None = None,
    card: str = "",
) -> Path:
    """Write a trained :class:`~sepkit.models.SpeechSourcePrior` as a new model folder.

    The folder holds the network's weights (safetensors), a ``config.json``
    of kind ``"source_model"`` with the STFT it was trained on, and the card;
    ``IVAESeparator(source_model=name)`` loads it (after the sha256 check).
    Same naming and no-overwrite rules as :func:`export_model`.

    Parameters
    ----------
    model : SpeechSourcePrior
    name : str
        ``ivae-<what>-<details>-v<N>``.
    sample_rate : float
        Rate of the audio it was trained on (other rates are resampled to it).
    n_fft, hop, segment_frames : int
        STFT frame and hop in samples, and frames per segment of u.
    root, config, card
        As :func:`export_model`.

    Returns
    -------
    folder : Path
    """
    from safetensors.torch import save_file

    def write(path: Path) -> Path:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path))
        return path

    meta = {
        "kind": "source_model",
        "sample_rate": float(sample_rate),
        "stft": {"n_fft": int(n_fft), "hop": int(hop), "segment_frames": int(segment_frames)},
        "model": model.config(),
        **(config or {}),
    }
    return _write_model_folder(name, root, write, meta, card, "Use a smaller n_hidden.")


def check_model_name(name) -> str:
    """``name`` if it follows the scheme ``ivae-<what>-<details>-v<N>``, else the error."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"Model name {name!r} does not follow the scheme ivae-<what>-<details>-v<N> "
            "(lower case letters, digits, dashes), e.g. 'ivae-eeg1020-256hz-v1'."
        )
    return name


def _write_model_folder(name: str, root, write_weights, meta: dict, card: str, fix: str) -> Path:
    """Assemble ``root/name`` (weights, config.json, card) and rename it into place."""
    from ._version import __version__

    check_model_name(name)
    root = Path(root) if root is not None else pretrained_dir()
    target = root / name
    if target.exists():
        raise FileExistsError(
            f"{target} exists and released model names are never overwritten. Bump the "
            "version in the name (e.g. -v2) or delete the folder if it was never released."
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        weights = write_weights(tmp / WEIGHTS_FILE)
        size = weights.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ValueError(
                f"Model {name!r} takes {size / 2**20:.1f} MB; each model must stay under "
                f"{MAX_MODEL_BYTES / 2**20:.0f} MB. {fix}"
            )
        digest = sha256_file(weights)
        head = {
            "name": name,
            "version": int(name.rsplit("-v", 1)[1]),
            "sepkit_version": __version__,
            "weights": WEIGHTS_FILE,
            "sha256": digest,
            "size_bytes": size,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps({**head, **meta}, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(card.replace("{sha256}", digest))
        # mkdtemp / mkstemp create owner-only entries; give the usual modes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
