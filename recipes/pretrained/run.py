"""Pretrained models: train, evaluate (direct use vs fine-tuning vs from scratch), export.

Stages (each resumable; outputs in EXP = recipes/pretrained/exp/<name>/):
  train     fit the model on the training split; EXP/model.safetensors
  evaluate  on held-out data, time and score (MCC, and SI-SDR for audio):
              direct use of the amortised encoder, fine-tuning from the model,
              training from scratch (same steps as fine-tuning, and the full
              budget); on two held-out sets: the same setup (same mixing,
              new signals) and a new setup (new mixing); EXP/eval.json
  export    write pretrained/<name>/ (weights, config.json, MODEL_CARD.md);
            refuses if that folder exists (released names are never overwritten)

Usage:
  python recipes/pretrained/run.py --config recipes/pretrained/conf/synthetic.toml
  python recipes/pretrained/run.py --config recipes/pretrained/conf/eeg.toml --stage evaluate
  python recipes/pretrained/run.py --config recipes/pretrained/conf/tiny.toml --export-root recipes/pretrained/exp/models

Overrides take the form --section.key=value (TOML value); unknown keys are
errors. Every run is deterministic (fixed seeds, one torch thread). Only
sepkit's public API is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sepkit import IVAESeparator, Recording, _recipe
from sepkit.cli.demo import synthesize_sources
from sepkit.datasets import make_audio_mixture, make_eeg, make_nonlinear_ica
from sepkit.metrics import find_permutation, mcc, si_sdr
from sepkit.pretrained import export_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STAGES = ("train", "evaluate", "export")


# ------------------------------------------------------------------ data
# Each maker returns dict(train=..., same=..., new=...), each a tuple
# (X, u, S_true): X what the separator gets (array, Recording or Raw), u the
# auxiliary variable to pass (None: the window index), S_true the sources.
def data_nonlinear_ica(d: dict, seed: int) -> dict:
    n_train, n_held = d["train_segments"], d["heldout_segments"]
    kw = dict(
        n_per_segment=d["n_per_segment"],
        n_layers=d["n_layers"],
        activation=d["activation"],
        mean_range=None,
    )
    X, S, u = make_nonlinear_ica(d["n_sources"], n_train + n_held, random_state=seed, **kw)
    cut = n_train * d["n_per_segment"]
    X2, S2, u2 = make_nonlinear_ica(d["n_sources"], n_held, random_state=seed + 1000, **kw)
    return dict(
        train=(X[:, :cut], u[:cut], S[:, :cut]),
        same=(X[:, cut:], u[cut:], S[:, cut:]),
        new=(X2, u2, S2),
    )


def _eeg(d: dict, duration: float, seed: int):
    raw, S, _ = make_eeg(
        d["n_sources"], duration=duration, sample_rate=d["sample_rate"], random_state=seed
    )
    return raw, S


def data_eeg(d: dict, seed: int) -> dict:
    raw, S = _eeg(d, d["train_seconds"] + d["heldout_seconds"], seed)
    cut = int(round(d["train_seconds"] * d["sample_rate"]))
    tmax = (cut - 1) / d["sample_rate"]
    train = raw.copy().crop(0, tmax)
    same = raw.copy().crop(cut / d["sample_rate"], None)
    raw2, S2 = _eeg(d, d["heldout_seconds"], seed + 1000)
    return dict(
        train=(train, None, S[:, :cut]), same=(same, None, S[:, cut:]), new=(raw2, None, S2)
    )


def _audio(d: dict, duration: float, seed: int):
    S = synthesize_sources(duration, d["sample_rate"], seed)
    mix = make_audio_mixture(S, d["n_mics"], sample_rate=d["sample_rate"], snr_db=d["snr_db"],
                             random_state=seed)  # fmt: skip
    gain = 0.5 / float(np.abs(mix.mixture).max())
    names = tuple(f"mic{i}" for i in range(d["n_mics"]))
    rec = Recording(mix.mixture * gain, d["sample_rate"], names, "audio")
    return rec, (mix.images * gain).astype(np.float32)


def data_audio(d: dict, seed: int) -> dict:
    rec, images = _audio(d, d["train_seconds"] + d["heldout_seconds"], seed)
    cut = int(round(d["train_seconds"] * d["sample_rate"]))
    rec2, images2 = _audio(d, d["heldout_seconds"], seed + 1000)
    return dict(
        train=(rec.replace(data=rec.data[:, :cut]), None, images[:, :cut]),
        same=(rec.replace(data=rec.data[:, cut:]), None, images[:, cut:]),
        new=(rec2, None, images2),
    )


MAKERS = {"nonlinear_ica": data_nonlinear_ica, "eeg": data_eeg, "audio": data_audio}


def make_data(cfg: dict) -> dict:
    d = dict(cfg["data"])
    kind = d.pop("generator")
    if kind not in MAKERS:
        raise SystemExit(f"data.generator must be one of {sorted(MAKERS)}, got {kind!r}")
    return MAKERS[kind](d, cfg["experiment"]["seed"])


def sources_of(Z) -> np.ndarray:
    if isinstance(Z, np.ndarray):
        return Z
    if isinstance(Z, Recording):
        return Z.data
    return Z.get_data()


def score(S_true: np.ndarray, Z, audio: bool) -> dict:
    Z = sources_of(Z)
    out = dict(mcc=float(mcc(S_true, Z)))
    if audio:
        perm = np.asarray(find_permutation(S_true, Z, criterion="correlation"))
        out["si_sdr_db"] = float(np.mean(np.asarray(si_sdr(S_true, Z[perm]))))
    return out


# ---------------------------------------------------------------- stages
def exp_dir(cfg: dict) -> Path:
    return Path(cfg["_exp"]) if cfg.get("_exp") else HERE / "exp" / cfg["model_info"]["name"]


def new_separator(cfg: dict, **changes) -> IVAESeparator:
    params = dict(cfg["model"])
    params.update(random_state=cfg["experiment"]["seed"], device="cpu")
    params.update(changes)
    return IVAESeparator(**params)


def stage_train(cfg: dict, data: dict) -> None:
    exp = exp_dir(cfg)
    path = exp / "model.safetensors"
    if path.exists():
        print(f"[train] {path} exists; skipping (delete it to retrain)")
        return
    X, u, S = data["train"]
    sep = new_separator(cfg)
    t0 = time.perf_counter()
    sep.fit(X, u)
    seconds = time.perf_counter() - t0
    exp.mkdir(parents=True, exist_ok=True)
    sep.save(path)
    train = dict(seconds=seconds, n_steps=sep.n_steps_run_, **score(S, sep.transform(X, u),
                 cfg["data"]["generator"] == "audio"))  # fmt: skip
    (exp / "train.json").write_text(json.dumps(train, indent=2))
    print(f"[train] {path}: {seconds:.1f} s, train MCC {train['mcc']:.3f}")


def stage_evaluate(cfg: dict, data: dict) -> None:
    exp = exp_dir(cfg)
    model = IVAESeparator.load(exp / "model.safetensors", device="cpu")
    audio = cfg["data"]["generator"] == "audio"
    ft_steps = cfg["experiment"]["finetune_steps"]
    results = {}
    for split in ("same", "new"):
        X, u, S = data[split]
        rows = {}
        t0 = time.perf_counter()
        Z = model.transform(X)  # amortised encoder: no u needed
        rows["direct"] = dict(seconds=time.perf_counter() - t0, n_steps=0, **score(S, Z, audio))
        runs = (
            ("finetune", ft_steps, model),
            ("scratch_same_steps", ft_steps, None),
            ("scratch_full", cfg["model"]["n_steps"], None),
        )
        for label, steps, init in runs:
            sep = new_separator(cfg, n_steps=steps)
            t0 = time.perf_counter()
            sep.fit(X, u, init=init)
            Z = sep.transform(X, u)
            rows[label] = dict(seconds=time.perf_counter() - t0, n_steps=steps,
                               **score(S, Z, audio))  # fmt: skip
        results[split] = rows
        for label, r in rows.items():
            extra = f", SI-SDR {r['si_sdr_db']:.1f} dB" if audio else ""
            print(
                f"[evaluate] {split:>4} {label:<19} MCC {r['mcc']:.3f}{extra}, {r['seconds']:.1f} s"
            )
    results["hardware"] = _recipe.hardware(python=True)
    (exp / "eval.json").write_text(json.dumps(results, indent=2))


# The weights of these separators are trained on data sepkit generates (no third
# party's recordings): they ship under the code's licence.
_LICENCE = (
    "BSD-3-Clause, as sepkit's code (LICENSE): the weights were trained on data that "
    "sepkit generates, no third party's recordings."
)


def card_text(cfg: dict, train: dict, ev: dict, command: str) -> str:
    info, d = cfg["model_info"], cfg["data"]
    audio = d["generator"] == "audio"
    lines = [
        f"# {info['name']}",
        "",
        info["description"].strip(),
        "",
        "## Facts",
        "",
        f"- version: {info['name'].rsplit('-v', 1)[1]}; sha256 of weights.safetensors: `{{sha256}}`",
        f"- kind: {info['kind']}; input: {info['input']}",
        f"- sources: {cfg['model'].get('n_sources')}; architecture: "
        + ", ".join(f"{k}={v}" for k, v in cfg["model"].items() if k != "n_sources"),
        f"- data: `{d['generator']}` with "
        + ", ".join(f"{k}={v}" for k, v in d.items() if k != "generator")
        + f", seed {cfg['experiment']['seed']}",
        f"- training: {train['n_steps']} steps in {train['seconds']:.0f} s; MCC on the "
        f"training split {train['mcc']:.3f}",
        f"- produced by: `{command}`",
        "",
        "## Held-out results",
        "",
        "Same setup: the same mixing (head, room or MLP) as in training, signals the model "
        "never saw. New setup: a new mixing and new signals (seed + 1000). Direct use applies "
        "the amortised encoder q(z|x) as shipped; fine-tuning runs "
        f"{cfg['experiment']['finetune_steps']} steps from the model "
        "(`fit(X, init=name)`, keeping its whitening); from scratch trains a new model with "
        "the same settings for the same steps and for the full training budget. Seconds "
        "include transform. One run, seed " + str(cfg["experiment"]["seed"]) + " for data and "
        "models. Hardware: " + ev["hardware"] + ".",
        "",
        "| held-out set | method | steps | MCC |"
        + (" SI-SDR (dB) |" if audio else "")
        + " seconds |",
        "|---|---|---|---|" + ("---|" if audio else "") + "---|",
    ]
    names = {"direct": "direct use", "finetune": "fine-tune", "scratch_same_steps":
             "from scratch", "scratch_full": "from scratch (full)"}  # fmt: skip
    for split, title in (("same", "same setup"), ("new", "new setup")):
        for key, label in names.items():
            r = ev[split][key]
            sdr = f" {r['si_sdr_db']:.1f} |" if audio else ""
            lines.append(f"| {title} | {label} | {r['n_steps']} | {r['mcc']:.3f} |{sdr} "
                         f"{r['seconds']:.2f} |")  # fmt: skip
    lines += ["", "## Limits", "", info["limits"].strip(), ""]
    lines += ["## Licence", "", _LICENCE, ""]
    return "\n".join(lines)


def stage_export(cfg: dict, command: str, root: Path | None) -> None:
    exp = exp_dir(cfg)
    train = json.loads((exp / "train.json").read_text())
    ev = json.loads((exp / "eval.json").read_text())
    sep = IVAESeparator.load(exp / "model.safetensors", device="cpu")
    info = cfg["model_info"]
    config = dict(
        kind=info["kind"],
        description=info["description"].strip(),
        input=info["input"],
        recipe=command,
        data={k: v for k, v in cfg["data"].items()},
        seed=cfg["experiment"]["seed"],
        metrics=dict(train=train, heldout=ev),
    )
    folder = export_model(sep, info["name"], root=root, config=config,
                          card=card_text(cfg, train, ev, command))  # fmt: skip
    print(f"[export] {folder}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--export-root", type=Path, default=None,
                        help="write the model folder here instead of pretrained/")  # fmt: skip
    parser.add_argument("--exp", type=Path, default=None,
                        help="work folder (default recipes/pretrained/exp/<name>)")  # fmt: skip
    args, overrides = parser.parse_known_args(argv)
    config_path = args.config if args.config.exists() else HERE / args.config
    if not config_path.is_file():
        raise SystemExit(
            f"--config {args.config}: no such file. Pass the path of a TOML config (the "
            f"recipe's own are in {HERE / 'conf'})."
        )
    cfg = _recipe.load_config(config_path, overrides)
    cfg["_exp"] = args.exp
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The EEG has a high-pass edge")
    try:
        rel = config_path.resolve().relative_to(ROOT)
    except ValueError:
        rel = config_path
    command = " ".join(["python recipes/pretrained/run.py", "--config", str(rel), *overrides])
    stages = STAGES if args.stage == "all" else (args.stage,)
    target = (args.export_root or ROOT / "pretrained") / cfg["model_info"]["name"]
    if "export" in stages and cfg["model_info"].get("smoke_test") and args.export_root is None:
        # Audit: the tiny config exported a fake model into pretrained/, which
        # `sepkit models list` then showed. Refused before any stage runs.
        raise SystemExit(
            f"{cfg['model_info']['name']} is a smoke test's model: pass --export-root with a "
            "temporary folder; it is never exported into pretrained/."
        )
    if "export" in stages and target.exists():
        raise SystemExit(
            f"{target} exists and released models are never overwritten; bump the version "
            "in model_info.name (e.g. -v2) or pass --export-root for a trial run."
        )
    data = make_data(cfg) if set(stages) & {"train", "evaluate"} else None
    for stage in stages:
        if stage == "train":
            stage_train(cfg, data)
        elif stage == "evaluate":
            stage_evaluate(cfg, data)
        else:
            stage_export(cfg, command, args.export_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
