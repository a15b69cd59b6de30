"""Where the shipped pretrained models live, and their integrity check.

The registry reads ``pretrained/<name>/config.json`` and checks a model's
weights against the sha256 written there before anything is read; it knows
nothing of the estimator (:func:`sepkit.pretrained.load_pretrained` and
``IVAESeparator.from_pretrained`` build one from the verified file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

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


def _registered(name: str) -> bool:
    """Whether ``name`` is a bare model name of the registry (not a path)."""
    if not _NAME_RE.match(name):
        return False
    root = pretrained_dir()
    return root.is_dir() and (root / name / CONFIG_FILE).is_file()


def _resolve(name_or_path) -> tuple[Path, dict]:
    """Model folder and parsed config for a registered name or a model folder.

    A bare name of a shipped model is the registry's, whatever the working
    folder holds (audit: a copy named like a shipped model in the working
    folder took its place, also for the speech prior that ``domain="auto"``
    picks); anything else is a path.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            "'name_or_path' must be a model name (str) or a model folder (path), got "
            f"{type(name_or_path).__name__}."
        )
    candidate = Path(name_or_path)
    if isinstance(name_or_path, str) and _registered(name_or_path):
        folder = _registry_dir() / name_or_path
    elif candidate.is_dir() and (candidate / CONFIG_FILE).is_file():
        folder = candidate
    elif candidate.is_file() and candidate.name == CONFIG_FILE:
        folder = candidate.parent
    elif candidate.is_dir():
        raise ValueError(
            f"{candidate} is a folder without {CONFIG_FILE}: not a model folder. Pass a "
            f"folder with {CONFIG_FILE} and {WEIGHTS_FILE}, or the name of a shipped model."
        )
    else:
        name = os.fspath(name_or_path)
        valid = list_models()
        raise ValueError(
            f"Unknown pretrained model {name!r}. Valid names are: "
            f"{', '.join(valid) if valid else '(none shipped)'}; or pass the path of a "
            "model folder (with config.json and weights.safetensors)."
        )
    return folder, read_config(folder)


def read_config(folder: Path) -> dict:
    """The checked ``config.json`` of the model folder ``folder``."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (the model's config), got {config!r}.")
    for key in ("name", "sha256"):
        if key not in config:
            raise ValueError(f"{path} lacks the required key {key!r}.")
    weights = config.get("weights", WEIGHTS_FILE)
    if not isinstance(weights, str) or Path(weights).name != weights:
        # The weights are the folder's own file (audit: "../x/weights.safetensors" and
        # absolute paths elsewhere were read).
        raise ValueError(
            f"{path}: 'weights' must name a file in the model folder, got {weights!r}."
        )
    return config


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


def verified_weights(name_or_path) -> tuple[Path, dict, str]:
    """(weights file, config, sha256) of a model, after checking the sha256.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), or a weights file
        whose sha256 differs from the one in ``config.json`` (the file is then
        not read at all).
    """
    folder, config = _resolve(name_or_path)
    weights = folder / config.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"Model {config['name']!r} has no weights file at {weights}.")
    return weights, config, _check_digest(weights, config)


def _check_digest(weights: Path, config: dict) -> str:
    digest = sha256_file(weights)
    if digest != config["sha256"]:
        raise ValueError(
            f"sha256 mismatch for {weights}: config.json says {config['sha256']}, the file has "
            f"{digest}. The file is corrupt or was changed; restore it (git checkout) or "
            "re-run the recipe named in its MODEL_CARD.md under a new name."
        )
    return digest


def check_model_file(path) -> None:
    """Check a weights file loaded by its path against its model folder's sha256.

    A file that its folder's ``config.json`` names as the model's weights is a
    model folder's file: loaded by path it gets the same check as by name
    (audit: ``--model pretrained/<name>/weights.safetensors`` skipped it, and a
    changed byte changed the sources without a word). Other files have no
    config to check against.
    """
    path = Path(path)
    config_path = path.parent / CONFIG_FILE
    if not config_path.is_file():
        return
    config = read_config(path.parent)
    if config.get("weights", WEIGHTS_FILE) == path.name:
        _check_digest(path, config)
