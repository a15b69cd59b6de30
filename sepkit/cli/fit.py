"""``sepkit fit``: fit a separator on one recording and save it.

The model is written with IVAESeparator.save (safetensors weights and JSON
settings, no pickle); ``sepkit separate --model FILE`` applies it to other
recordings with the same channels and sample rate. --init NAME fine-tunes a
pretrained model (``sepkit models list``) instead of starting from random
weights; its architecture is kept and only the training settings change.
"""

from __future__ import annotations

import argparse
import time

from .._recipe import fitted_model
from ._common import (
    add_common,
    add_model_options,
    check_targets,
    model_options,
    read_input,
    say,
    show_progress,
    write_json,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit a separator on a recording and save it (.safetensors)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="recording file (audio or EEG)")
    p.add_argument("-o", "--out", required=True, metavar="MODEL", help="output file (.safetensors)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--n-sources", type=int, metavar="K", help="number of sources")
    how.add_argument("--init", metavar="NAME", help="fine-tune this pretrained model")
    p.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the estimator's)"
    )
    p.add_argument("--window", type=float, default=None, help="window length in seconds for u")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_common(p)
    return p


def run(args) -> int:
    from ..separator import IVAESeparator, check_model_path

    out = check_model_path(args.out, "-o")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    if args.n_sources is not None and args.n_sources < 1:
        raise ValueError(f"--n-sources must be >= 1, got {args.n_sources}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}.")
    metrics_path = out.with_name(out.name[: -len(".safetensors")] + "_metrics.json")
    check_targets([out, metrics_path], args.force)
    X, kind = read_input(args.input)
    if args.init:
        pre = IVAESeparator.from_pretrained(args.init, device="cpu")
        sep = IVAESeparator(**{**pre.get_params(), "checkpoint_dir": None})
    else:
        pre = None
        sep = IVAESeparator(args.n_sources, **model_options(args))
    params = dict(random_state=args.seed, verbose=show_progress(args), device="cpu")
    for key in ("steps", "window", "lr"):
        value = getattr(args, key)
        if value is not None:
            params["n_steps" if key == "steps" else key] = value
    sep.set_params(**params)
    say(args, f"fitting {sep.n_sources} sources on {args.input} ({kind})")
    t0 = time.perf_counter()
    sep.fit(X, init=pre)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    sep.save(out, overwrite=args.force)
    info = dict(
        input=str(args.input),
        kind=kind,
        init=args.init,
        n_sources=sep.n_sources,
        n_steps=sep.n_steps_run_,
        **fitted_model(sep),
        highpass=sep.highpass,
        lowpass=sep.lowpass,
        final_loss=sep.history_[-1]["loss"],
        seconds=seconds,
    )
    write_json(info, metrics_path)
    print(f"fitted {sep.n_sources} sources in {seconds:.1f} s -> {out}")
    return 0
