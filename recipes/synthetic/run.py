"""Synthetic identifiability recipe (Khemakhem et al. 2020, Sec. 6).

Stages:
  1 prepare   generate the data for every (depth, seed) into EXP/data/
  2 fit       fit every method on every dataset; per-fit JSON in EXP/fits/
  3 report    aggregate median / spread of MCC and seconds into EXP/results.md

Usage:
  python recipes/synthetic/run.py --config recipes/synthetic/conf/paper.toml
  python recipes/synthetic/run.py --config recipes/synthetic/conf/tiny.toml --stage 2 --model.n_steps=1000

Methods: "flow" (IVAESeparator(mixing="flow"), the exact-likelihood flow, with
the [flow] section as fit_params), "ivae" and "vae" (the ELBO network with the
[model] section, prior "gauss" and "standard"), "fastica", and "tcl"
(time-contrastive learning, tcl.py, with the [tcl] section; scored against |s|,
since TCL identifies each source only up to its sign).

Overrides take the form --section.key=value (value parsed as TOML); unknown
keys are errors. Only sepkit's public API is used.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from sklearn.decomposition import FastICA  # noqa: E402
from tcl import fit_tcl  # noqa: E402

from sepkit import IVAESeparator  # noqa: E402
from sepkit._recipe import (  # noqa: E402
    hardware,
    load_config,
    make_synthetic_data,
    recipe_parser,
    run_stages,
)
from sepkit.metrics import mcc  # noqa: E402


def data_path(exp: Path, n_layers: int, seed: int) -> Path:
    return exp / "data" / f"L{n_layers}_seed{seed}.npz"


def stage_prepare(cfg: dict, exp: Path) -> None:
    d = cfg["data"]
    for n_layers in cfg["experiment"]["n_layers"]:
        for seed in cfg["experiment"]["seeds"]:
            path = data_path(exp, n_layers, seed)
            if path.exists():
                continue
            X, S, u = make_synthetic_data(d, n_layers, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, X=X, S=S, u=u)
    print(f"[prepare] data in {exp / 'data'}")


def fit_one(method: str, X, u, n_sources: int, cfg: dict, seed: int):
    if method == "fastica":
        est = FastICA(n_sources, whiten="unit-variance", max_iter=1000, random_state=seed)
        return est.fit_transform(X.T.astype(np.float64)).T
    if method == "tcl":
        return fit_tcl(X, u, n_sources, seed=seed, **(cfg.get("tcl") or {}))
    if method == "flow":
        # The exact-likelihood flow family (what mixing="auto" picks on square
        # data); its settings are the [flow] section, passed as fit_params.
        sep = IVAESeparator(
            n_sources, mixing="flow", random_state=seed, fit_params=cfg.get("flow") or None
        )
        return sep.fit(X, u).transform(X, u)
    # "ivae" and "vae": the ELBO-trained network with the [model] settings.
    prior = "gauss" if method == "ivae" else "standard"
    sep = IVAESeparator(
        n_sources, prior=prior, mixing="nonlinear", random_state=seed, **cfg["model"]
    )
    return sep.fit(X, u).transform(X, u)


def stage_fit(cfg: dict, exp: Path) -> None:
    n_sources = cfg["data"]["n_sources"]
    out = exp / "fits"
    out.mkdir(parents=True, exist_ok=True)
    for n_layers in cfg["experiment"]["n_layers"]:
        for seed in cfg["experiment"]["seeds"]:
            data = np.load(data_path(exp, n_layers, seed))
            for method in cfg["experiment"]["methods"]:
                path = out / f"{method}_L{n_layers}_seed{seed}.json"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                Z = fit_one(method, data["X"], data["u"], n_sources, cfg, seed)
                seconds = time.perf_counter() - t0
                # TCL estimates |s_i| (its sufficient statistic), not s_i: score it there.
                S = np.abs(data["S"]) if method == "tcl" else data["S"]
                row = dict(
                    method=method,
                    n_layers=n_layers,
                    seed=seed,
                    seconds=seconds,
                    mcc=mcc(S, Z),
                    mcc_spearman=mcc(S, Z, method="spearman"),
                    target="|s|" if method == "tcl" else "s",
                    # The fitting process's machine and threads (the report may
                    # run in another process, with other threads).
                    hardware=hardware(),
                )
                path.write_text(json.dumps(row))
                print(
                    f"[fit] {method:8s} L={n_layers} seed={seed} MCC={row['mcc']:.3f} "
                    f"({seconds:.1f} s)",
                    flush=True,
                )


def stage_report(cfg: dict, exp: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((exp / "fits").glob("*.json"))]
    lines = [
        "| mixing layers | method | MCC median | MCC min-max | Spearman median | s per fit (median) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for n_layers in cfg["experiment"]["n_layers"]:
        for method in cfg["experiment"]["methods"]:
            sel = [r for r in rows if r["n_layers"] == n_layers and r["method"] == method]
            if not sel:
                continue
            m = [r["mcc"] for r in sel]
            label = f"{method} (vs abs(s))" if sel[0].get("target") == "|s|" else method
            lines.append(
                f"| {n_layers} | {label} | {statistics.median(m):.3f} | {min(m):.3f}-{max(m):.3f} | "
                f"{statistics.median(r['mcc_spearman'] for r in sel):.3f} | "
                f"{statistics.median(r['seconds'] for r in sel):.1f} | {len(sel)} |"
            )
    machines = sorted({r.get("hardware", "not recorded") for r in rows})
    text = "\n".join(lines) + f"\n\nHardware of the fits: {'; '.join(machines)}\n"
    (exp / "results.md").write_text(text)
    print(text)
    return text


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=3, default_config="paper.toml")
    stages = {1: stage_prepare, 2: stage_fit, 3: stage_report}
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
