"""Helpers shared by the subcommands: inputs, output targets, messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._atomic import atomic_write


def add_common(p) -> None:
    """--quiet and --force, which every writing subcommand takes."""
    p.add_argument("--quiet", action="store_true", help="print only results and errors")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_model_options(p, *, tf_note: str = "") -> None:
    """--domain, --mixing, --highpass, --lowpass, --prior: the separator's options of those names.

    Used by fit, separate and fit-batch.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    tf_note : str, default ""
        Said in the help after "rooms" for tf (fit-batch: "--steps does not apply").
    """
    rooms = f"rooms; {tf_note}" if tf_note else "rooms"
    p.add_argument(
        "--domain",
        choices=("auto", "time", "tf"),
        default="auto",
        help="time: iVAE on samples (instantaneous mixing, EEG); tf: convolutive audio "
        f"({rooms}); auto: for audio files tf when the channels' cross-spectra show "
        "delays (a room), time when they are real (an instantaneous mix); time "
        "otherwise (default: %(default)s)",
    )
    p.add_argument(
        "--mixing",
        choices=("auto", "linear", "post-nonlinear", "nonlinear"),
        default="auto",
        help="linear: the linear iVAE fitted by exact maximum likelihood (seconds, no "
        "network; --steps does not apply); post-nonlinear: the same behind a learned "
        "per-sensor nonlinearity (saturating amplifiers); nonlinear: the convolutional "
        "network; auto: linear for EEG (post-nonlinear where --highpass/--lowpass are "
        "given and the sensors clip), nonlinear otherwise (default: %(default)s)",
    )
    p.add_argument(
        "--highpass",
        type=float,
        default=None,
        metavar="HZ",
        help="fit on a copy high-passed at HZ (separation then applies to the file as it "
        "is, as MNE's ICA); with --mixing post-nonlinear (or auto on clipping EEG) the "
        "filter acts after the learned unwarping, so give it the unfiltered recording "
        "(default: no filter)",
    )
    p.add_argument(
        "--lowpass",
        type=float,
        default=None,
        metavar="HZ",
        help="low-pass edge of the same fit filter (with --highpass: a band-pass)",
    )
    p.add_argument(
        "--prior",
        choices=("auto", "gauss", "laplace", "gengauss"),
        default="auto",
        help="p(z|u): gengauss gives the linear models (EEG) a generalised Gaussian per "
        "source, which also separates sources whose variance hardly changes (ECG, line "
        "noise), at about a minute per 10 min recording; laplace is for the network; "
        "auto: Gaussian for the linear models, Laplace (EEG) or Gaussian for the network "
        "(default: %(default)s)",
    )


def model_options(args) -> dict:
    """IVAESeparator keyword arguments from the options of :func:`add_model_options`."""
    return dict(
        domain=args.domain,
        mixing=args.mixing,
        highpass=args.highpass,
        lowpass=args.lowpass,
        prior=args.prior,
    )


def say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def show_progress(args) -> bool:
    """Progress bars only on an interactive terminal and without --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def check_targets(paths, force: bool) -> None:
    """Refuse, before any work, to overwrite existing outputs without --force."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"output(s) exist: {', '.join(existing[:3])}{more}. Pass --force to overwrite "
            "them, or choose another output folder."
        )


def make_output_folder(path) -> list[Path]:
    """Make ``path`` and its missing parents; return the folders made, deepest first.

    Pass the list to :func:`remove_empty_folders` when a run fails before it
    writes anything, so that it leaves no empty folder behind.
    """
    path = Path(path)
    made = []
    folder = path
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    path.mkdir(parents=True, exist_ok=True)
    return made


def remove_empty_folders(made: list[Path]) -> None:
    """Remove the folders :func:`make_output_folder` made, as far as they are empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (a run wrote there), or already gone
            return


def write_json(obj, path: Path) -> Path:
    """Atomic JSON write (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=float)
        f.write("\n")
    return path


def input_kind(path: Path) -> str:
    """'audio' or 'eeg' from the suffix; a clear error otherwise."""
    from ..io import AUDIO_EXTENSIONS, SUPPORTED_EEG_EXTENSIONS

    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in SUPPORTED_EEG_EXTENSIONS or path.name.lower().endswith(".fif.gz"):
        return "eeg"
    raise ValueError(
        f"{path}: unknown file type {suffix!r}. Audio: {', '.join(AUDIO_EXTENSIONS)}; EEG: "
        f"{', '.join(SUPPORTED_EEG_EXTENSIONS)}."
    )


def read_input(path, *, eeg_picks="eeg") -> tuple[object, str]:
    """(Recording or Raw, kind) for an audio or EEG file.

    ``eeg_picks``: the channels of an EEG file to read (``read_eeg``'s picks;
    None for every data channel, e.g. to keep the EOG leads beside the EEG).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist.")
    kind = input_kind(path)
    if kind == "audio":
        from ..io import read_audio

        return read_audio(path), kind
    from ..io import read_eeg

    return read_eeg(path, picks=eeg_picks), kind


def stem_of(path) -> str:
    name = Path(path).name
    for suffix in (".fif.gz", ".fif"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            return name[:-4] if name.endswith("_raw") else name
    return Path(name).stem
