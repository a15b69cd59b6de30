"""``sepkit fit-batch``: fit one separator per recording.

Each FILE (audio: WAV, FLAC, OGG, ...; EEG: any format ``sepkit.io.read_eeg``
reads, and FIF files of MNE Epochs, fitted end to end as ICA.fit(epochs) does)
gets its own IVAESeparator, saved as ``DIR/<stem>.safetensors`` (the stem as
``sepkit separate`` names its outputs: ``sub-01`` for sub-01_raw.fif). A
recording that cannot be read or fitted prints ``FAILED <file>: <reason>``
and is skipped; the others complete, and the exit code is 1 if any failed.

Under torchrun (``torchrun --nproc_per_node=N -m sepkit fit-batch ...``) the
files are shared out by the RANK and WORLD_SIZE environment variables: file i
goes to rank i % WORLD_SIZE, and each rank uses GPU LOCAL_RANK when CUDA is
there. No process group is needed, since the fits are independent.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import (
    add_model_options,
    check_writable,
    make_output_folder,
    model_options,
    n_sources_arg,
    n_sources_value,
    read_input,
    remove_empty_folders,
    seed_arg,
    stem_of,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit-batch",
        help="fit one separator per recording (shared across torchrun ranks)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings (audio or EEG)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.safetensors")
    p.add_argument(
        "--n-sources",
        type=n_sources_arg,
        default=None,
        metavar="K",
        help="sources per recording (default: audio, its number of channels; EEG, 'all': "
        "every dimension its good channels hold, as MNE's n_components=None); as MNE's "
        "n_components, a share of the variance (e.g. 0.99) or 'all' is counted per recording",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=5000,
        metavar="N",
        help="optimiser steps, domain time (default: %(default)s)",
    )
    add_model_options(p, tf_note="--steps does not apply")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def _reason(err: BaseException) -> str:
    # In the command line's words (audit: 'highpass' and device='cuda' where the user
    # typed --highpass and --device).
    from . import command_line_phrasing

    text = command_line_phrasing(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _rank_world() -> tuple[int, int]:
    """RANK and WORLD_SIZE (torchrun's), checked: 0 <= RANK < WORLD_SIZE."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        rank = world = -1
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(
            f"RANK={os.environ.get('RANK', '0')!r} and WORLD_SIZE="
            f"{os.environ.get('WORLD_SIZE', '1')!r} must be whole numbers with 0 <= RANK < "
            "WORLD_SIZE (torchrun sets them). Run under torchrun, or unset them."
        )
    return rank, world


def run(args) -> int:
    from ..io import is_epochs_file
    from ..separator import IVAESeparator

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    files = [Path(f) for f in args.files]
    out_dir = Path(args.out)
    targets = [out_dir / f"{stem_of(f)}.safetensors" for f in files]
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets, strict=True):
        if t in seen:
            raise ValueError(
                f"{seen[t]} and {f} would both be saved as {t}. Rename one, or fit them in "
                "separate runs with different --out folders."
            )
        seen[t] = f

    rank, world = _rank_world()
    check_writable(out_dir)
    # The settings, checked once before any file is read (audit: a bad --highpass or
    # --device failed every file, one FAILED line each, exit 1).
    IVAESeparator(
        1, n_steps=args.steps, **model_options(args), device=args.device, random_state=args.seed
    )._validate_params()
    device = args.device
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    made = make_output_folder(out_dir)

    n_failed = n_saved = 0
    for i, (path, target) in enumerate(zip(files, targets, strict=True)):
        if i % world != rank:
            continue
        try:
            if target.exists() and not args.force:
                raise FileExistsError(f"{target} exists; pass --force to overwrite it")
            rec, kind = read_input(path, epochs=is_epochs_file(path))
            n_sources = args.n_sources
            if n_sources is None:  # EEG: within the rank of its good channels (bads left out)
                n_sources = len(rec.ch_names) if kind == "audio" else "all"
            sep = IVAESeparator(
                n_sources_value(n_sources),
                n_steps=args.steps,
                **model_options(args),
                device=device,
                random_state=args.seed,
            )
            sep.fit(rec)
            sep.save(target, overwrite=args.force)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one bad recording must not stop the batch
            n_failed += 1
            print(f"FAILED {path}: {_reason(err)}", flush=True)
            continue
        n_saved += 1
        print(f"saved {target}", flush=True)
    if not n_saved and world == 1:
        # Every recording failed: leave no empty folder. (Under torchrun the
        # other ranks may still be about to write there.)
        remove_empty_folders(made)
    return 1 if n_failed else 0
