"""``python -m sepkit.train CONFIG``: train one separator on a corpus.

Trains one separator on a corpus of recordings, on one process or
data-parallel under ``torchrun``::

    torchrun --nproc_per_node=2 -m sepkit.train config.toml

Each rank holds all the data and draws its own batches (seed + rank);
DistributedDataParallel averages the gradients, so the replicas stay
identical. Only the network trains this way (``mixing = "nonlinear"``, or
"auto" with a network setting); under torchrun a config whose model is
another family (the flow that "auto" takes for a square corpus, the linear
model of an EEG or audio corpus) is refused, since every process would fit
the whole corpus. gloo is the backend on CPU, nccl on CUDA. Rank 0 writes the
separator, readable with :meth:`sepkit.IVAESeparator.load`. A resume needs as
many processes as the run had (the checkpoints are per rank). The config
(TOML; paths relative to its folder)::

    out = "corpus.safetensors"   # the fitted separator
    overwrite = false            # replace an existing `out`
    checkpoint_dir = "ckpt"      # optional: the network's checkpoints, one file per rank
    resume = false               # continue from the checkpoints in checkpoint_dir

    [data]
    files = ["s01.fif", "s02.fif"]  # .npy (n_channels, n_times), audio or EEG
    # or, instead of files, a make_nonlinear_ica dataset:
    # synthetic = {n_sources = 3, n_segments = 10, n_per_segment = 200, n_layers = 1}
    # or windows of a corpus, read window by window (sepkit.data.WindowDataset):
    # corpus = {files = ["a.wav", "b.flac"], window_seconds = 1.0, sample_rate = 16000}

    [model]                      # IVAESeparator keyword arguments
    n_sources = 3
    n_steps = 2000
    random_state = 0

Instead of ``[model]``, a ``[source_model]`` table trains a speech source
prior on a mono ``corpus`` and writes a model folder for
``IVAESeparator(source_model=...)`` (see :mod:`sepkit.cli.train_source`).

With files, u is the window index within each file (windows never span two
files); with ``synthetic``, the dataset's segment labels. Recordings are
concatenated in time, so a training chunk longer than one sample
(``kernel_size > 1``) may straddle the junction of two files.

With ``corpus``, the keys are ``files``, ``window_seconds``, and optionally
``hop_seconds``, ``sample_rate`` to resample every window to one rate and
``channels`` (``"mean"`` for mono, or EEG channel names), as
:class:`sepkit.data.WindowDataset` takes them; windows over bad annotations
are always left out (its ``reject_by_annotation=True``). Each file is read one
window at a time (never whole; recordings shorter than a window are skipped
with a warning), and the windows are concatenated in order, so that u, the
window index of the concatenation at the corpus's window length, numbers the
windows kept through the files. The separator keeps the corpus's kind (EEG,
audio) and channel names, so it chooses the family it would for one such
recording and separates a new Raw of the same channels by name; its windows
(``window_samples_``) are the corpus's, which a new recording is then cut
into. So [model] sets no ``window``, ``window_samples`` or
``window_overlap``. Overlapping windows (``hop_seconds < window_seconds``)
repeat their shared samples. Every rank reads the whole corpus; the
estimator's fit trains on data in memory.

Errors a user can cause (a missing or malformed config, a missing file, an
existing output or checkpoint, a setting out of range, a checkpoint of other
data) print one line, ``python -m sepkit.train: error: ...``, on stderr and
exit with status 2, as the ``sepkit`` command line does; ``--debug`` shows
the traceback instead. Everything is checked before training starts, except
what only the data or the fit can tell.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data import WindowDataset, open_npy
from ..datasets import make_nonlinear_ica
from ..io import SUPPORTED_EEG_EXTENSIONS, Recording, read_audio, read_eeg, to_recording
from ..separator import IVAESeparator, check_model_path
from ..train import distributed_training
from ..windows import resolve_window_samples, window_labels
from . import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR, train_source
from ._common import OneLineParser, Terminated, check_writable, sigterm_unwinds
from .train_source import check_source_model

PROG = "python -m sepkit.train"
_CONFIG_KEYS = {"out", "overwrite", "checkpoint_dir", "resume", "data", "model", "source_model"}
_DATA_KEYS = {"files", "synthetic", "corpus"}
# [data] corpus: WindowDataset's keyword arguments; u comes from its windows.
_CORPUS_KEYS = {"files", "window_seconds", "hop_seconds", "sample_rate", "channels"}
_WINDOW_SETTINGS = ("window", "window_samples", "window_overlap")
# The type of each top-level entry, and how to say it.
_TYPES = {
    "out": (str, "a file name ending in .safetensors"),
    "overwrite": (bool, "true or false"),
    "checkpoint_dir": (str, "a folder name"),
    "resume": (bool, "true or false"),
    "data": (dict, "a table ([data])"),
    "model": (dict, "a table ([model])"),
    "source_model": (dict, "a table ([source_model])"),
}
# The errors a user can cause, as ``sepkit``'s main catches them (sepkit.cli),
# plus every OSError: a folder given for a file, a read-only folder, a full disk.
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)
# Library advice names keyword arguments; in the config, the same switches are
# TOML booleans: "Pass resume=True" -> "Pass resume = true".
_SWITCH = re.compile(r"\b(resume|overwrite)=(True|False)\b")


def config_phrasing(message: str) -> str:
    """``message`` with the library's ``resume=True`` / ``overwrite=True`` as config entries.

    >>> config_phrasing("Pass resume=True to continue it.")
    'Pass resume = true to continue it.'
    """
    # TOML has no None: "every dimension" is n_sources left out (audit).
    message = message.replace(
        "or None (every dimension the data hold: the command line's 'all')",
        "or left out of [model] (every dimension the data hold)",
    ).replace("Pass e.g. 15, 0.99 or None.", "Set e.g. n_sources = 15 in [model].")
    return _SWITCH.sub(lambda m: f"{m.group(1)} = {m.group(2).lower()}", message)


def run_reporting_errors(prog: str, func, *, debug: bool = False, phrasing=config_phrasing) -> int:
    """``func()``'s exit code; a user error is one line on stderr and ``EXIT_USER_ERROR``.

    The handling of :func:`sepkit.cli.main` as a function of its own (imports
    nothing heavy), so that ``sepkit``'s main can share it.

    Parameters
    ----------
    prog : str
        How the messages start: ``"{prog}: error: ..."``, ``"{prog}: warning: ..."``.
    func : callable
        The command; returns its exit code (None for 0).
    debug : bool
        Re-raise errors (with their traceback) and keep Python's warning format.
    phrasing : callable
        Rewrites the library's messages for this command's users.

    Returns
    -------
    code : int
        0 (or ``func``'s code), ``EXIT_USER_ERROR`` (2) after a user error
        (:data:`USER_ERRORS`), 130 after Ctrl-C and 143 after SIGTERM (which
        unwinds as Ctrl-C does: torchrun sends it to the other workers when one
        fails).
    """

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(phrasing(str(message)).split())
        print(f"{prog}: warning: {text}", file=sys.stderr if file is None else file)

    try:
        with sigterm_unwinds(), warnings.catch_warnings():
            if not debug:  # --debug keeps Python's format, with the source line
                warnings.showwarning = show
            return int(func() or 0)
    except USER_ERRORS as err:
        if debug:
            raise
        # One line, whatever the message holds (TOML and OS errors may span lines).
        print(f"{prog}: error: {' '.join(phrasing(str(err)).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _unknown(found, allowed, where: str) -> None:
    extra = sorted(set(found) - set(allowed))
    if extra:
        raise ValueError(
            f"Unknown key(s) {extra} in {where}. Allowed keys are {sorted(allowed)}; "
            "check the spelling."
        )


def _load_toml(path: Path) -> dict:
    if path.is_dir():
        raise IsADirectoryError(f"The config {path} is a folder; pass the path of a TOML file.")
    if not path.is_file():
        raise FileNotFoundError(f"No config file at {path}.")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"The config {path} is not valid TOML: {err}. See the sepkit.cli.train docstring "
            "for an example."
        ) from None


def _read_config(path: Path) -> dict:
    cfg = _load_toml(path)
    _unknown(cfg, _CONFIG_KEYS, f"the config {path}")
    if ("model" in cfg) == ("source_model" in cfg):
        raise ValueError(
            f"The config {path} must have exactly one of [model] (train a separator) and "
            "[source_model] (train a speech source prior); see the sepkit.cli.train docstring."
        )
    for key in ("out", "data"):
        if key not in cfg:
            raise ValueError(
                f"The config {path} lacks the '{key}' entry; see the sepkit.cli.train docstring."
            )
    for key, (kind, what) in _TYPES.items():
        if key in cfg and not isinstance(cfg[key], kind):
            raise TypeError(f"'{key}' in {path} must be {what}, got {cfg[key]!r}.")
    if cfg.get("resume", False) and "checkpoint_dir" not in cfg:
        raise ValueError(
            f"resume = true in {path} needs the checkpoint_dir of the run to resume; add "
            'e.g. checkpoint_dir = "ckpt", or set resume = false.'
        )
    if "checkpoint_dir" in cfg.get("model", {}):
        raise ValueError(
            f"Set checkpoint_dir at the top of {path} (relative to the config's folder), "
            "not in [model]."
        )
    _check_data_entry(cfg["data"], path)
    clash = [key for key in _WINDOW_SETTINGS if key in cfg.get("model", {})]
    if "corpus" in cfg["data"] and clash:
        raise ValueError(
            f"{clash} in [model] of {path}: with 'corpus', u is the index of the corpus's "
            "windows. Set window_seconds (and hop_seconds) in 'corpus' instead."
        )
    overlap = cfg.get("model", {}).get("window_overlap", 0)
    if "files" in cfg["data"] and overlap:
        # u is then one label per sample (the disjoint window index within each file):
        # overlapping windows have no such labels, and fit would use the overlap only
        # at transform, so that u would mean another thing there than in training.
        raise ValueError(
            f"window_overlap = {overlap} in [model] of {path}: with 'files', u is the index "
            "of disjoint windows within each file. Drop window_overlap, or read the files "
            "through 'corpus' with hop_seconds below window_seconds."
        )
    return cfg


def _check_data_entry(data: dict, path: Path) -> None:
    """[data]: exactly one of a list of file names, a synthetic table or a corpus table."""
    _unknown(data, _DATA_KEYS, f"[data] of {path}")
    if sum(key in data for key in _DATA_KEYS) != 1:
        raise ValueError(
            f"[data] of {path} must give exactly one of 'files' (a list of recordings), "
            "'synthetic' (make_nonlinear_ica arguments) or 'corpus' (windows of recordings)."
        )
    if "synthetic" in data:
        if not isinstance(data["synthetic"], dict):
            raise TypeError(
                f"'synthetic' in [data] of {path} must be a table of make_nonlinear_ica "
                f"arguments, got {data['synthetic']!r}."
            )
        allowed = inspect.signature(make_nonlinear_ica).parameters
        _unknown(data["synthetic"], allowed, f"'synthetic' in [data] of {path}")
        return
    if "corpus" in data:
        _check_corpus_entry(data["corpus"], path)
        return
    _check_file_list(data["files"], f"'files' in [data] of {path}")


def _check_corpus_entry(corpus, path: Path) -> None:
    """[data] corpus: a table of WindowDataset arguments with files and window_seconds."""
    where = f"'corpus' in [data] of {path}"
    example = 'corpus = {files = ["a.wav"], window_seconds = 1.0}'
    if not isinstance(corpus, dict):
        raise TypeError(
            f"{where} must be a table of WindowDataset arguments, e.g. {example}, got {corpus!r}."
        )
    _unknown(corpus, _CORPUS_KEYS, where)
    for key in ("files", "window_seconds"):
        if key not in corpus:
            raise ValueError(f"{where} lacks '{key}'; write e.g. {example}.")
    _check_file_list(corpus["files"], f"'files' in {where}")


def _check_file_list(files, what: str) -> None:
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise TypeError(
            f"{what} must be a list of file names, got {files!r}. "
            'Write e.g. files = ["s01.fif", "s02.fif"].'
        )
    if not files:
        raise ValueError(
            f"{what} is empty; list at least one recording "
            '(.npy, audio or EEG), e.g. files = ["s01.fif"].'
        )


def _check_files(names: list[str], base: Path, config: Path) -> list[Path]:
    """The paths of the corpus, each an existing file (checked before any is read)."""
    paths = [base / name for name in names]
    for name, path in zip(names, paths, strict=True):
        if path.is_dir():
            raise IsADirectoryError(
                f"{name} in 'files' of {config} is a folder ({path}); list recordings, not folders."
            )
        if not path.exists():
            raise FileNotFoundError(
                f"{name} in 'files' of {config} does not exist (looked for {path}; paths are "
                "relative to the config's folder)."
            )
    return paths


def _check_out(cfg: dict, base: Path, config: Path) -> Path:
    """The output model's path, checked before training, not when the model is saved."""
    out = check_model_path(base / cfg["out"], f"'out' in {config}")
    if out.is_dir():
        raise IsADirectoryError(
            f"'out' in {config} is a folder ({out}); name a file, e.g. "
            f"{cfg['out'].rstrip('/')}/model.safetensors."
        )
    if out.exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{out} exists. Set overwrite = true in the config to replace it.")
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder {folder} of 'out' in {config} does not exist. Create it first, or "
            "name a file in an existing folder."
        )
    check_writable(folder, f"'out' in {config}:")
    return out


def _model_settings(cfg: dict, base: Path, config: Path) -> dict:
    """[model] as IVAESeparator keyword arguments, checked before any data are read."""
    model_cfg = dict(cfg["model"])
    _unknown(model_cfg, IVAESeparator().get_params(), f"[model] of {config}")
    if "checkpoint_dir" in cfg:
        model_cfg["checkpoint_dir"] = str(base / cfg["checkpoint_dir"])
    # The estimator checks its settings in fit; a corpus may take minutes to read.
    IVAESeparator(**model_cfg)._validate_params()
    if isinstance(model_cfg.get("n_sources"), float):  # the corpus's windows need the count
        raise ValueError(
            f"n_sources = {model_cfg['n_sources']} in [model] of {config} is a share of "
            "variance, which IVAESeparator.fit counts on one recording; a training corpus is "
            "cut into windows for a number of sources. Give the number, e.g. n_sources = 8."
        )
    return model_cfg


def _read_recording(path: Path):
    """(data, sample_rate) of one .npy, audio or EEG file; sample_rate None for .npy."""
    name = path.name.lower()
    if name.endswith(".npy"):
        return open_npy(path, mmap=False).astype(np.float32), None
    if any(name.endswith(ext) for ext in SUPPORTED_EEG_EXTENSIONS):
        rec = to_recording(read_eeg(path))
    else:
        rec = read_audio(path)
    return rec.data, rec.sample_rate


def _synthetic(kwargs: dict, config: Path):
    try:
        X, _, u = make_nonlinear_ica(**kwargs)
    except (TypeError, ValueError) as err:
        raise type(err)(f"'synthetic' in [data] of {config}: {err}") from None
    return X, u


def _windowed(spec: dict, base: Path, config: Path):
    """The windows of [data] corpus, read one at a time, concatenated, and the window length.

    A Recording of the corpus's kind and channel names (audit: kind "other" and no
    names gave EEG corpora another family than EEG files, and a model that no Raw
    could be separated with); u is then the window index at the corpus's window
    length (the window number through the recordings, as before), so a new
    recording is separated with windows of that length.
    """
    spec = dict(spec)
    paths = _check_files(spec.pop("files"), base, config)
    try:
        ds = WindowDataset(paths, **spec)
    except (TypeError, ValueError) as err:
        raise type(err)(f"'corpus' in [data] of {config}: {err}") from None
    n_windows, n = len(ds), ds.window_samples
    X = np.empty((ds.n_channels, n_windows * n), np.float32)
    for i in range(n_windows):
        X[:, i * n : (i + 1) * n] = ds[i]["window"].numpy()
    # Windows count through the recordings in order: the window index of the
    # concatenation numbers them on across files.
    return Recording(X, ds.sample_rate, ds.ch_names, ds.kind), n


def _corpus(cfg: dict, base: Path, sep, config: Path):
    """Concatenated data (Recording or array) and per-sample window labels."""
    data_cfg = cfg["data"]
    if "synthetic" in data_cfg:
        return _synthetic(data_cfg["synthetic"], config)
    if "corpus" in data_cfg:
        X, window_samples = _windowed(data_cfg["corpus"], base, config)
        sep.set_params(window=None, window_samples=window_samples)
        return X, None
    parts, labels, rates, offset = [], [], set(), 0
    names = data_cfg["files"]
    for name, path in zip(names, _check_files(names, base, config), strict=True):
        data, rate = _read_recording(path)
        if parts and data.shape[0] != parts[0].shape[0]:
            raise ValueError(
                f"{name} has {data.shape[0]} channels but the first file has "
                f"{parts[0].shape[0]}; a corpus needs the same channels in every file."
            )
        rates.add(rate)
        # u = window index within each file, numbered on across files, so no
        # window mixes two recordings.
        window_samples = resolve_window_samples(
            sep.window, sep.window_samples, rate, data.shape[1], sep.n_sources
        )
        codes = window_labels(data.shape[1], window_samples)
        parts.append(data)
        labels.append(codes + offset)
        offset += int(codes.max()) + 1
    if len(rates) > 1:
        raise ValueError(
            f"The files have different sample rates {sorted(map(str, rates))}; resample "
            "them to one rate first."
        )
    X = np.concatenate(parts, axis=1)
    rate = rates.pop()
    if rate is not None:
        X = Recording(X, rate)
    return X, np.concatenate(labels)


def _check_data_parallel(sep, X, u, world: int) -> None:
    """Refuse torchrun for a family that would fit the whole corpus on every process.

    Only the network trains data-parallel (each rank its own batches, gradients
    averaged); the flow and the linear and time-frequency fits would repeat the
    same fit on every rank (audit: bit-identical weights in 2.6 times the time).
    """
    family = sep._planned_family(X, u)
    if family != "network":
        raise ValueError(
            f"torchrun runs {world} processes, but the '{family}' family that [model] "
            "chooses here does not train data-parallel: every process would fit the whole "
            "corpus. Run python -m sepkit.train CONFIG without torchrun, or choose the "
            'network (mixing = "nonlinear" in [model]), which trains data-parallel.'
        )


def _train(config: Path) -> int:
    """Train and save the separator of the config at ``config`` (see the module docstring)."""
    cfg = _read_config(config)
    base = config.parent
    if "source_model" in cfg:
        settings = check_source_model(cfg, config)
        paths = _check_files(cfg["data"]["corpus"]["files"], base, config)
        return train_source.run(cfg, config, paths, settings)
    out = _check_out(cfg, base, config)
    model_cfg = _model_settings(cfg, base, config)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = model_cfg.get("device", "auto")
    use_cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    if world > 1:
        if use_cuda:
            model_cfg["device"] = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        if world > 1 and model_cfg.get("random_state") is None:
            # Same seed everywhere: rank r then draws its batches from seed + r.
            seed = torch.randint(2**31 - 1, (1,), device="cuda" if use_cuda else "cpu")
            torch.distributed.broadcast(seed, src=0)
            model_cfg["random_state"] = int(seed.item())
        model_cfg["verbose"] = bool(model_cfg.get("verbose", False)) and rank == 0
        sep = IVAESeparator(**model_cfg)
        X, u = _corpus(cfg, base, sep, config)
        if world > 1:
            _check_data_parallel(sep, X, u, world)
        with distributed_training():
            sep.fit(X, u, resume=cfg.get("resume", False))
        if rank == 0:
            sep.save(out, overwrite=cfg.get("overwrite", False))
            # The exact-likelihood families take no optimiser steps of the network's kind.
            n_iter = (sep.history_[-1] if sep.history_ else {}).get("n_iter")
            how = f"{sep.n_steps_run_} steps"
            if sep.family_ not in ("network", "flow"):
                how = f"the {sep.family_} family" + (f", {n_iter} iterations" if n_iter else "")
            print(f"saved {out} ({how}, world size {world})")
        if world > 1:
            torch.distributed.barrier()  # every rank leaves together (see train_source)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train one separator on the corpus of a TOML config; returns the exit code.

    A user error prints one line on stderr and returns 2 (see the module
    docstring); ``--debug`` raises it with its traceback.
    """
    parser = OneLineParser(
        prog=PROG,
        description="Train one IVAESeparator on a corpus, data-parallel under torchrun.",
    )
    parser.add_argument("config", help="TOML config (see the sepkit.cli.train docstring)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # Under torchrun every rank reports; the rank says whose line it is.
    prog = f"{PROG} (rank {os.environ.get('RANK', '0')})" if world > 1 else PROG
    return run_reporting_errors(prog, lambda: _train(Path(args.config)), debug=args.debug)
