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

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "PRETRAINED_ENV",
    "export_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "pretrained_dir",
    "sha256_file",
]

# Environment variable that points to another models folder (e.g. after a
# non-editable install, which does not copy the repository's pretrained/).
PRETRAINED_ENV = "SEPKIT_PRETRAINED_DIR"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
# ivae-<what>-<details>-v<N>: lower case, digits and dashes, a version at the end.
_NAME_RE = re.compile(r"^ivae-[a-z0-9]+(?:-[a-z0-9]+)*-v[0-9]+$")
# Size limits of the issue: each model < 20 MB, all together < 50 MB.
MAX_MODEL_BYTES = 20 * 1024 * 1024


def pretrained_dir() -> Path:
    """The folder that holds the shipped models.

    ``$SEPKIT_PRETRAINED_DIR`` when set, else ``pretrained/`` in the checkout
    the package was imported from (one level above ``sepkit/``).
    """
    env = os.environ.get(PRETRAINED_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "pretrained"


def _registry_dir() -> Path:
    root = pretrained_dir()
    if not root.is_dir():
        raise FileNotFoundError(
            f"No pretrained models folder at {root}. The models ship in the repository's "
            "pretrained/ folder, which a non-editable install does not copy: install with "
            f"'pip install -e .' from a checkout, or set {PRETRAINED_ENV} to that folder."
        )
    return root


def list_models() -> list[str]:
    """Names of the shipped models, sorted.

    Returns
    -------
    names : list of str
        Each folder of :func:`pretrained_dir` that holds a ``config.json``.
    """
    root = _registry_dir()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolve(name_or_path) -> tuple[Path, dict]:
    """Model folder and parsed config for a registered name or a model folder."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            "'name_or_path' must be a model name (str) or a model folder (path), got "
            f"{type(name_or_path).__name__}."
        )
    candidate = Path(name_or_path)
    if candidate.is_dir() and (candidate / CONFIG_FILE).is_file():
        folder = candidate
    elif candidate.is_file() and candidate.name == CONFIG_FILE:
        folder = candidate.parent
    else:
        name = os.fspath(name_or_path)
        valid = list_models()
        if name not in valid:
            raise ValueError(
                f"Unknown pretrained model {name!r}. Valid names are: "
                f"{', '.join(valid) if valid else '(none shipped)'}; or pass the path of a "
                "model folder (with config.json and weights.safetensors)."
            )
        folder = _registry_dir() / name
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CONFIG_FILE} is not valid JSON: {err}") from None
    for key in ("name", "sha256"):
        if key not in config:
            raise ValueError(f"{folder / CONFIG_FILE} lacks the required key {key!r}.")
    return folder, config


def model_info(name_or_path) -> dict:
    """The ``config.json`` of a model, plus its ``path`` and model card text.

    Parameters
    ----------
    name_or_path : str or path
        A name from :func:`list_models` or a model folder.

    Returns
    -------
    info : dict
        Config keys (name, version, kind, sample_rate, ch_names, n_sources,
        sha256, recipe, metrics, ...), ``path`` (the folder) and ``card``
        (the text of MODEL_CARD.md, or "" when absent).
    """
    folder, config = _resolve(name_or_path)
    card = folder / CARD_FILE
    return {**config, "path": str(folder), "card": card.read_text() if card.is_file() else ""}


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
    from .separator import IVAESeparator

    folder, config = _resolve(name_or_path)
    weights = folder / config.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"Model {config['name']!r} has no weights file at {weights}.")
    digest = sha256_file(weights)
    if digest != config["sha256"]:
        raise ValueError(
            f"sha256 mismatch for {weights}: config.json says {config['sha256']}, the file has "
            f"{digest}. The file is corrupt or was changed; restore it (git checkout) or "
            "re-run the recipe named in its MODEL_CARD.md under a new name."
        )
    sep = IVAESeparator.load(weights, device=device)
    sep.pretrained_ = {"name": config["name"], "version": config.get("version"), "sha256": digest}
    return sep


# --------------------------------------------------------------------------- #
# Fine-tuning: fit(..., init=name_or_path)
# --------------------------------------------------------------------------- #
# Constructor parameters that shape the network: they must match the
# pretrained model's for its weights to fit.
_ARCH_PARAMS = (
    "n_sources",
    "n_hidden",
    "n_layers",
    "kernel_size",
    "activation",
    "encoder_u",
    "decoder_u",
    "learn_noise",
    "whiten",
)


def prepare_init(sep, init, n_channels: int, sample_rate, ch_names) -> dict:
    """Check ``init`` against ``sep`` and the data; copy its input transform.

    Called by ``IVAESeparator.fit(..., init=...)`` in place of fitting the
    channel means and whitening: the pretrained network was trained on
    inputs in *its* whitened space, so the same map must feed it (a new PCA
    basis could rotate or flip the input dimensions and make the weights
    meaningless). Returns the weights to load into the new network.
    """
    if hasattr(init, "model_"):  # an already loaded or fitted separator
        pre, label = init, getattr(init, "pretrained_", {}).get("name", "init")
    else:
        pre = load_pretrained(init, device="cpu")
        label = pre.pretrained_["name"]
    if getattr(pre, "domain_", "time") != "time":
        raise ValueError(
            f"init={label!r} is a domain={pre.domain_!r} separator; fine-tuning (init=) applies "
            "to domain='time' models. Fit a new separator instead."
        )
    mismatch = {
        k: (getattr(sep, k), getattr(pre, k))
        for k in _ARCH_PARAMS
        if getattr(sep, k) != getattr(pre, k)
    }
    if mismatch:
        detail = ", ".join(f"{k}={a!r} (model: {b!r})" for k, (a, b) in mismatch.items())
        raise ValueError(
            f"init={label!r} has another architecture than this separator: {detail}. Start from "
            f"IVAESeparator.from_pretrained({label!r}), change training settings with "
            "set_params(n_steps=..., lr=...), then fit(X, init=...)."
        )
    for attr, param in (("prior_", "prior"), ("posterior_", "posterior")):
        if getattr(sep, attr) != getattr(pre, attr):
            raise ValueError(
                f"init={label!r} has {param}={getattr(pre, attr)!r} but this fit resolved "
                f"{param}={getattr(sep, attr)!r}. Pass {param}={getattr(pre, attr)!r}."
            )
    if n_channels != pre.n_channels_:
        names = f" ({', '.join(pre.ch_names_)})" if pre.ch_names_ else ""
        raise ValueError(
            f"X has {n_channels} channels but init={label!r} expects {pre.n_channels_}{names}. "
            "Select them first (picks=[...] for an MNE Raw)."
        )
    if (
        sample_rate is not None
        and pre.sample_rate_ is not None
        and float(sample_rate) != float(pre.sample_rate_)
    ):
        raise ValueError(
            f"X has sample_rate {float(sample_rate):g} Hz but init={label!r} expects "
            f"{float(pre.sample_rate_):g} Hz. Resample it first: "
            "sepkit.io.audio.resample(rec, rate) for a Recording, sepkit.io.resample(raw, rate) "
            "for an MNE Raw."
        )
    if pre.ch_names_ and ch_names and tuple(ch_names) != tuple(pre.ch_names_):
        raise ValueError(
            f"X has channels {list(ch_names)} but init={label!r} expects "
            f"{list(pre.ch_names_)} in this order. Reorder or pick them (picks=[...] for an "
            "MNE Raw)."
        )
    sep.mean_ = np.array(pre.mean_, dtype=np.float64)
    sep.whitening_ = np.array(pre.whitening_, dtype=np.float64)
    sep.dewhitening_ = np.array(pre.dewhitening_, dtype=np.float64)
    sep.rank_ = int(sep.whitening_.shape[0])
    return {k: v.detach().cpu().clone() for k, v in pre.model_.state_dict().items()}


def apply_init(model, state: dict) -> list[str]:
    """Load ``state`` into ``model``; tensors whose shape differs stay as initialised.

    Only the per-u tables (the prior's, and the encoder's or decoder's with
    ``encoder_u`` / ``decoder_u``) can differ, when the new data have another
    number of u values; they are re-learnt. Returns their names.
    """
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    keep = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise ValueError(
            "The pretrained weights do not fit this network: missing "
            f"{sorted(set(missing) - set(skipped))}, unexpected {sorted(unexpected)}."
        )
    return skipped


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
    from ._version import __version__

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"Model name {name!r} does not follow the scheme ivae-<what>-<details>-v<N> "
            "(lower case letters, digits, dashes), e.g. 'ivae-eeg1020-256hz-v1'."
        )
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
        weights = sep.save(tmp / WEIGHTS_FILE)
        size = weights.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ValueError(
                f"Model {name!r} takes {size / 2**20:.1f} MB; each model must stay under "
                f"{MAX_MODEL_BYTES / 2**20:.0f} MB. Use a smaller n_hidden or n_layers."
            )
        digest = sha256_file(weights)
        meta = {
            "name": name,
            "version": int(name.rsplit("-v", 1)[1]),
            "sepkit_version": __version__,
            "weights": WEIGHTS_FILE,
            "sha256": digest,
            "size_bytes": size,
            "sample_rate": sep.sample_rate_,
            "n_channels": sep.n_channels_,
            "ch_names": list(sep.ch_names_) if sep.ch_names_ else None,
            "n_sources": sep.n_sources,
            **(config or {}),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
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
