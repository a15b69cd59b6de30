"""Helpers shared by the recipe and benchmark scripts (``recipes/``, ``benchmarks/``).

One place for what every run script needs: the TOML config with
``--section.key=value`` overrides, the stage loop with its command line, and
the one-line machine description that goes into every results table, and
which model a separator fitted (also in the command line's metrics JSON).
Private (underscore) because the scripts and the CLI are its only users; it
lives in the package so that a script finds it from any install.
"""

from __future__ import annotations

import argparse
import os
import platform
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = [
    "fitted_model",
    "hardware",
    "load_config",
    "make_synthetic_data",
    "mne_ica",
    "pra_bss",
    "recipe_parser",
    "run_stages",
    "separation_scores",
]


def load_config(
    path: str | Path,
    overrides: Iterable[str],
    *,
    sections: Iterable[str] | None = None,
    extra_keys: Mapping[str, Iterable[str]] | None = None,
    extra_hint: str = "",
) -> dict:
    """Read a TOML config and apply ``--section.key=value`` overrides.

    Parameters
    ----------
    path : str or Path
        The TOML file.
    overrides : iterable of str
        Command-line leftovers, each ``--section.key=value``; ``value`` is parsed
        as a TOML value (``--model.lr=3e-4``, ``--data.seeds=[0,1]``,
        ``--data.name='"x"'``).
    sections : iterable of str or None, default None
        The sections an override may name (None: every section of the file).
    extra_keys : mapping of str to iterable of str or None, default None
        Keys an override may set although the file does not have them, per
        section (``{"sepkit": IVAESeparator().get_params()}``); the section
        itself must be in the file.
    extra_hint : str, default ""
        Appended to the unknown-key message, to name those extra keys.

    Returns
    -------
    cfg : dict
        The config, one dict per section, with the overrides applied.

    Raises
    ------
    SystemExit
        For an override not of the form ``--section.key=value`` or naming a key
        that is not in the file (nor in ``extra_keys``); the message lists the
        known keys, so the script stops with it and exit status 1; and for a
        value that is not TOML (a bare word is taken as text only for a key
        whose value in the file is text).

    Examples
    --------
    >>> cfg = load_config("recipes/synthetic/conf/tiny.toml", ["--model.n_steps=60"])
    ... # doctest: +SKIP
    """
    cfg = tomllib.loads(Path(path).read_text())
    allowed = list(cfg) if sections is None else list(sections)
    extra = {s: set(keys) for s, keys in (extra_keys or {}).items()}
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise SystemExit(f"override {item!r} must look like --section.key=value")
        key, value = item[2:].split("=", 1)
        section, _, name = key.partition(".")
        if not (
            section in allowed
            and section in cfg
            and (name in cfg[section] or name in extra.get(section, ()))
        ):
            known = sorted(f"{s}.{k}" for s in allowed for k in cfg.get(s, ()))
            raise SystemExit(
                f"unknown config key {key!r}; known keys: {', '.join(known)}{extra_hint}"
            )
        cfg[section][name] = _override_value(key, value, cfg[section].get(name))
    return cfg


def _override_value(key: str, value: str, current):
    """``value`` read as a TOML value; a bare word where the file holds a string is that string.

    ``--train.name=ivae-v2`` should not need the shell-quoted ``'"ivae-v2"'``
    that TOML asks for, but a bare word is taken as text only where the file's
    own value is text, so that a mistyped number or list still stops the run.
    """
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        if isinstance(current, str) and value and "\n" not in value:
            return value
        raise SystemExit(
            f"override --{key}={value!r} is not a TOML value (a number, true/false, "
            f'a "quoted string" or a [list]); write e.g. --{key}=[0, 1] or '
            f"--{key}='\"text\"'"
        ) from None


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def hardware(device=None, *, python: bool = False) -> str:
    """One line describing the machine, for the hardware column of results tables.

    Parameters
    ----------
    device : str or torch.device or None, default None
        The device the timings ran on. None: name the first GPU if there is
        one, else say "no GPU". A CUDA device: name that GPU. A CPU device:
        name no GPU (the timings did not use one).
    python : bool, default False
        Also give the Python version (model cards record it).

    Returns
    -------
    text : str
        CPU model, cores, torch version, torch threads and the GPU, e.g.
        ``"AMD EPYC, 2 cores, torch 2.14.1+cu130, 1 torch thread(s), no GPU"``
        (the dev machine).
    """
    import torch

    parts = [
        _cpu_model(),
        f"{os.cpu_count()} cores",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch thread(s)",
    ]
    if device is None:
        parts.append(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    elif torch.device(device).type == "cuda":
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    if python:
        parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def recipe_parser(
    doc: str, here: Path, *, n_stages: int, default_config: str = "default.toml"
) -> argparse.ArgumentParser:
    """The command line every staged recipe takes: --config, --exp, --stage, --stop-stage.

    Parameters
    ----------
    doc : str
        The script's docstring (shown by ``--help`` as written).
    here : Path
        The recipe folder; the default config is ``here / "conf" / default_config``.
    n_stages : int
        Number of stages, numbered from 1; ``--stop-stage`` defaults to the last.
    default_config : str, default "default.toml"
        File name of the config used without ``--config``.

    Returns
    -------
    parser : argparse.ArgumentParser
        Add a recipe's own options to it, then call :func:`run_stages`.
    """
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=here / "conf" / default_config)
    parser.add_argument(
        "--exp", type=Path, default=None, help="output folder (default exp/<config>)"
    )
    parser.add_argument("--stage", type=int, default=1, help=f"first stage to run (1-{n_stages})")
    parser.add_argument("--stop-stage", type=int, default=n_stages, help="last stage to run")
    return parser


def run_stages(
    parser: argparse.ArgumentParser,
    stages: Mapping[int, Callable[..., object]],
    here: Path,
    argv: list[str] | None = None,
    *,
    load: Callable[[Path, list[str]], dict],
    extra: Callable[[argparse.Namespace], tuple] = lambda args: (),
) -> int:
    """Parse the command line, load the config and run stages --stage to --stop-stage.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        From :func:`recipe_parser`, with any options of the recipe added.
    stages : mapping of int to callable
        Stage number to ``stage(cfg, exp, *extra(args))``.
    here : Path
        The recipe folder; without ``--exp`` the outputs go to
        ``here / "exp" / <config file stem>``.
    argv : list of str or None, default None
        The arguments (None: ``sys.argv[1:]``); what the parser does not know
        is passed to ``load`` as overrides.
    load : callable
        ``load(config_path, overrides) -> cfg``: :func:`load_config`, or the
        recipe's own wrapper of it that adds checks.
    extra : callable, default no extra arguments
        ``extra(args)`` gives the arguments passed to every stage after
        ``cfg, exp`` (for example ``(args.only,)``).

    Returns
    -------
    status : int
        0, for ``sys.exit``.
    """
    args, overrides = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        raise SystemExit(
            f"--config {args.config}: no such file. Pass the path of a TOML config (the "
            f"recipe's own are in {here / 'conf'})."
        )
    first, last = min(stages), max(stages)
    if not first <= args.stage <= args.stop_stage <= last:
        # Audit: --stage 0 was a KeyError traceback, --stage 9 did nothing.
        raise SystemExit(
            f"--stage {args.stage} --stop-stage {args.stop_stage}: the stages are {first} to "
            f"{last}, and --stage must not come after --stop-stage. Pass numbers in that range."
        )
    cfg = load(args.config, overrides)
    exp = args.exp or here / "exp" / args.config.stem
    for stage in range(args.stage, args.stop_stage + 1):
        stages[stage](cfg, exp, *extra(args))
    return 0


def make_synthetic_data(data: Mapping, n_layers: int, seed: int):
    """The dataset that a ``[data]`` section of the synthetic recipe describes.

    Shared by ``recipes/synthetic`` and ``benchmarks/synthetic_time.py``, which
    times the recipe's setting: both read the config the same way.

    Parameters
    ----------
    data : mapping
        The ``[data]`` section: ``n_sources``, ``n_segments``, ``n_per_segment``,
        ``activation``, ``std_range``, ``centered`` (True: zero-mean sources,
        else means drawn in [-1, 1]), and optionally ``repeat_mixing``
        (default False) and ``unit_norm`` (default "inputs").
    n_layers : int
        Depth of the mixing MLP.
    seed : int
        Random seed of the data.

    Returns
    -------
    X, S, u
        As :func:`sepkit.datasets.make_nonlinear_ica` returns them.
    """
    from .datasets import make_nonlinear_ica

    return make_nonlinear_ica(
        data["n_sources"],
        data["n_segments"],
        data["n_per_segment"],
        n_layers,
        activation=data["activation"],
        std_range=tuple(data["std_range"]),
        mean_range=None if data["centered"] else (-1.0, 1.0),
        repeat_mixing=data.get("repeat_mixing", False),
        unit_norm=data.get("unit_norm", "inputs"),
        random_state=seed,
    )


def source_kinds(raw) -> list[str]:
    """make_eeg's source kinds, in the order of the true sources (from the description).

    Shared by the EEG recipes that score estimates per kind of true source.
    """
    import ast
    import re

    found = re.search(r"sources=(\[[^\]]*\])", raw.info["description"] or "")
    if found is None:
        raise SystemExit("the recording's description does not list make_eeg's source kinds")
    return list(ast.literal_eval(found.group(1)))


# The sepkit variants the EEG recipes and benchmark compare, as IVAESeparator
# arguments on top of the config's: "sepkit" the defaults (the linear iVAE for
# EEG, with the extended prior since 2026-12-06), "sepkit-gauss" the linear iVAE
# with the Gaussian prior (the defaults before that), "sepkit-hp" the defaults
# fitted on the unfiltered recording with the filter inside (mixing="auto" then
# tries the sensor unwarping), then the post-nonlinear model, the generalised
# Gaussian prior, the network, the flow, and the network started at picard's
# solution.
SEPKIT_METHODS = {
    "sepkit": {},
    "sepkit-gauss": {"prior": "gauss"},
    "sepkit-hp": {},
    "sepkit-pnl": {"mixing": "post-nonlinear"},
    "sepkit-gg": {"prior": "gengauss"},
    "sepkit-nonlinear": {"mixing": "nonlinear"},
    "sepkit-flow": {"mixing": "flow"},
    "sepkit-picard": {"ica_init": "picard"},
}


def fitted_model(sep) -> dict:
    """Which model a fitted IVAESeparator chose: for results rows and metrics JSON.

    ``mixing``: its ``mixing_`` (None where it has none, e.g. ``domain_ ==
    "tf"``); ``prior``: its ``prior_``; ``sensor_nonlinearity_max``: the
    largest ``sensor_nonlinearity_`` where the sensor unwarping was fitted (why
    ``mixing="auto"`` kept or dropped it), else None.
    """
    values = getattr(sep, "sensor_nonlinearity_", None)
    return dict(
        mixing=getattr(sep, "mixing_", None),
        prior=getattr(sep, "prior_", None),
        sensor_nonlinearity_max=None if values is None else float(values.max()),
    )


# The variants that fit the unfiltered recording and filter inside the
# separator (IVAESeparator(highpass=..., lowpass=...)): the post-nonlinear
# model's unwarping must see the samples as the amplifier wrote them, before
# any filter. The EEG recipes hand these the unfiltered file and filter their
# sources afterwards, as the recording is.
FILTER_INSIDE = frozenset({"sepkit-hp", "sepkit-pnl"})

# The ICA baselines as the EEG recipe and benchmark run them: MNE's method name
# and fit_params (infomax: the extended variant, as EEGLAB's runica default).
_MNE_ICA = {
    "picard": ("picard", None),
    "infomax": ("infomax", dict(extended=True)),
    "fastica": ("fastica", None),
}


def mne_ica(method: str, n_sources: int, seed: int):
    """An unfitted ``mne.preprocessing.ICA``, set up as the EEG baselines run it.

    Parameters
    ----------
    method : {"picard", "infomax", "fastica"}
        The ICA algorithm (infomax is the extended variant).
    n_sources : int
        Number of components.
    seed : int
        Random seed of the ICA.

    Returns
    -------
    ica : mne.preprocessing.ICA
        With ``max_iter="auto"`` and ``verbose="error"``; call ``fit``.
    """
    import mne

    mne_method, fit_params = _MNE_ICA[method]
    return mne.preprocessing.ICA(
        n_sources,
        method=mne_method,
        fit_params=fit_params,
        random_state=seed,
        max_iter="auto",
        verbose="error",
    )


def separation_scores(ref, est, mixture_ref) -> dict:
    """SI-SDRi, SDR and SIR (dB, means over sources) of ``est`` against ``ref``.

    ``est`` is trimmed to ``ref``'s length and its rows matched to ``ref``'s
    (the best permutation) first; ``mixture_ref`` (n_times,) is the reference
    microphone that SI-SDRi improves on.
    """
    import numpy as np

    from .metrics import apply_permutation, bss_eval, find_permutation, si_sdr_improvement

    est = est[:, : ref.shape[1]]
    est = apply_permutation(est, find_permutation(ref, est))
    bss = bss_eval(ref, est)
    return dict(
        si_sdri=float(np.mean(si_sdr_improvement(ref, est, mixture_ref))),
        sdr=float(np.mean(bss.sdr)),
        sir=float(np.mean(bss.sir)),
    )


def pra_bss(x, n_sources: int, method: str, n_fft: int, settings: Mapping, seed: int):
    """pyroomacoustics' AuxIVA, ILRMA or FastMNMF2 on sepkit's STFT (the frames ours use).

    Parameters
    ----------
    x : ndarray, shape (n_mics, n_times)
    n_sources : int
    method : {"auxiva", "ilrma", "fastmnmf2"}
    n_fft : int
        Frame length; the hop is a quarter of it.
    settings : mapping
        ``auxiva_n_iter``, ``ilrma_n_iter``, ``ilrma_n_components`` and (for
        "fastmnmf2") ``fastmnmf2_n_iter``.
    seed : int
        Seeds numpy's global generator, from which ILRMA and FastMNMF2 draw
        their start.

    Returns
    -------
    ndarray, shape (n_sources, n_times)
        The separated sources at the reference microphone (projection back).
    """
    import numpy as np
    import pyroomacoustics as pra
    import torch

    from . import functional_tf as F

    hop = n_fft // 4
    X = F.stft(torch.from_numpy(x), n_fft, hop).permute(2, 0, 1).numpy()  # (T, F, M)
    np.random.seed(seed)  # noqa: NPY002
    if method == "auxiva":
        Y = pra.bss.auxiva(X, n_src=n_sources, n_iter=settings["auxiva_n_iter"], proj_back=True)
    elif method == "ilrma":
        # pyroomacoustics' ILRMA is determined only: it gets the first n_sources microphones.
        Y = pra.bss.ilrma(
            X[:, :, :n_sources],
            n_src=n_sources,
            n_iter=settings["ilrma_n_iter"],
            n_components=settings["ilrma_n_components"],
            proj_back=True,
        )
    elif method == "fastmnmf2":
        Y = pra.bss.fastmnmf2(X, n_src=n_sources, n_iter=settings["fastmnmf2_n_iter"])
    else:
        raise ValueError(
            f"method must be 'auxiva', 'ilrma' or 'fastmnmf2', got {method!r}. Pick one of them."
        )
    Yt = torch.from_numpy(np.ascontiguousarray(Y)).permute(1, 2, 0).contiguous()
    return F.istft(Yt, n_fft, hop, x.shape[1]).numpy()
