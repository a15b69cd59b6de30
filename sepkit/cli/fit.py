"""``sepkit fit``: fit a separator on one recording and save it.

The model is written with IVAESeparator.save (safetensors weights and JSON
settings, no pickle); ``sepkit separate --model FILE`` applies it to other
recordings with the same channels and sample rate. --init NAME fine-tunes a
pretrained model (``sepkit models list``), or a model file of an earlier fit,
instead of starting from random weights; its architecture and settings are
kept and only the training settings (--steps, --window, --lr, --seed) change.
A FIF file of MNE Epochs is fitted on its epochs end to end, as
ICA.fit(epochs) does.

Beside MODEL goes MODEL_metrics.json (which model ran: family, domain,
mixing, prior, whether the sensor unwarping was kept; steps, final loss,
seconds); the console says the same in one line. The two files are written
together or not at all: a failed or interrupted run (or a full disk) leaves an
earlier model and its metrics as they were.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

from ._common import (
    MODEL_OPTIONS,
    OutputSet,
    add_channels_option,
    add_common,
    add_model_options,
    add_sample_options,
    check_fine_tune,
    check_input_file,
    check_kept_model,
    check_targets,
    check_writable,
    describe_model,
    drop_bad_epochs,
    fit_sample_kwargs,
    load_model,
    make_output_folder,
    model_line,
    model_options,
    n_sources_arg,
    n_sources_phrase,
    n_sources_value,
    read_input,
    remember_defaults,
    remove_empty_folders,
    sample_line,
    say,
    seed_arg,
    show_progress,
    warn_given_unused,
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
    how.add_argument(
        "--n-sources",
        type=n_sources_arg,
        metavar="K",
        help="number of sources; as MNE's n_components, a share of the variance (e.g. 0.99) "
        "or 'all' (every dimension the data hold), counted at fit (time-domain models)",
    )
    how.add_argument(
        "--init",
        metavar="NAME",
        help="fine-tune this model: a pretrained name or folder, or a .safetensors file "
        "written by sepkit fit (its settings are kept: no --mixing, --domain, --prior, "
        "--highpass, --lowpass or --source-model beside it)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the estimator's)"
    )
    p.add_argument("--window", type=float, default=None, help="window length in seconds for u")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    add_model_options(p)
    add_sample_options(p)
    add_channels_option(p)
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    add_common(p)
    remember_defaults(p, MODEL_OPTIONS)  # to tell the model options given (with --init)
    return p


def run(args) -> int:
    from ..io import is_epochs_file
    from ..separator import IVAESeparator, check_model_path

    out = check_model_path(args.out, "-o")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    metrics_path = out.with_name(out.name[: -len(".safetensors")] + "_metrics.json")
    sample_kwargs = fit_sample_kwargs(args)  # malformed options stop the run here
    check_input_file(args.input)
    reads = [args.input, *([args.init] if args.init and Path(args.init).is_file() else [])]
    check_targets([out, metrics_path], args.force, reads=reads)
    check_writable(out.parent, shown=out)
    # A FIF file of Epochs is fitted on its epochs end to end, as ICA.fit(epochs).
    epochs = is_epochs_file(args.input)
    X, kind = read_input(args.input, epochs=epochs, audio_channels=args.channels)
    if args.init and epochs:
        raise ValueError(
            f"{Path(args.input).name} holds MNE Epochs, and --init continues a network's "
            "training on a continuous recording. Fit a new separator on the epochs "
            "(--n-sources K), or fine-tune on the recording they were cut from."
        )
    if args.init:
        check_kept_model(args, "--init", args.init)
        pre = load_model(args.init)
        check_fine_tune(args.input, X, pre, args.init, "--init")
        sep = IVAESeparator(**{**pre.get_params(), "checkpoint_dir": None})
    else:
        pre = None
        sep = IVAESeparator(n_sources_value(args.n_sources), **model_options(args))
    params = dict(random_state=args.seed, verbose=show_progress(args), device="cpu")
    for key in ("steps", "window", "lr"):
        value = getattr(args, key)
        if value is not None:
            params["n_steps" if key == "steps" else key] = value
    sep.set_params(**params)
    made = make_output_folder(out.parent)
    try:
        info = _fit(args, sep, (X, kind), pre, sample_kwargs)
        names = re.compile(f"{re.escape(out.name)}|{re.escape(metrics_path.name)}")
        with OutputSet(out.parent, out.stem, names, what=f"{out.name} and its metrics") as st:
            sep.save(st.path / out.name)
            write_json(info, st.path / metrics_path.name)
    except BaseException:
        remove_empty_folders(made)
        raise
    say(args, model_line(Path(args.input).name, info))
    if line := sample_line(Path(args.input).name, info, args, X):
        say(args, line)
    print(f"fitted {sep.n_sources_} sources in {info['seconds']:.1f} s -> {out}")
    return 0


def _fit(args, sep, read, init, sample_kwargs) -> dict:
    """Fit ``sep`` on ``read`` (the input and its kind); the metrics entry.

    A non-finite result is an error.
    """
    X, kind = read
    X, fit_kwargs = drop_bad_epochs(args, Path(args.input).name, X, sample_kwargs)
    count = init.n_sources_ if init is not None else args.n_sources  # --init: the model's
    say(args, f"fitting {n_sources_phrase(count)} on {args.input} ({kind})")
    t0 = time.perf_counter()
    sep.fit(X, init=init, **fit_kwargs)
    warn_given_unused(args, sep)
    sep.reject_ = sample_kwargs["reject"]  # as ICA.reject_, also for epochs dropped with it
    seconds = time.perf_counter() - t0
    loss = sep.history_[-1].get("loss") if sep.history_ else None
    if loss is not None and not math.isfinite(loss):
        raise RuntimeError(
            f"the fit on {args.input} ended with a non-finite loss ({loss}), so no model was "
            "written. Check the recording for silent or flat channels and extreme values, or "
            "choose the model yourself (--domain, --mixing)."
        )
    return dict(
        input=str(args.input),
        kind=kind,
        init=args.init,
        n_sources=sep.n_sources_,
        n_steps=sep.n_steps_run_,
        **describe_model(sep),
        highpass=sep.highpass,
        lowpass=sep.lowpass,
        final_loss=loss,
        seconds=seconds,
    )
