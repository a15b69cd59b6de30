"""Benchmark: the iVAE's noiseless limit with an invertible decoder.

The "flow" core is an invertible network g (x -> s) fitted by exact maximum
likelihood under the iVAE's conditional prior, with the per-segment source
means and variances profiled out (set to the segment statistics of g(x)), as
the linear family does:

    -log p(x|u) = 0.5 sum_k pi_k sum_i log(2 pi e var_k(g_i(x))) - E log|det J_g(x)|

g alternates square linear maps (log|det| by ``torch.linalg.slogdet``) and
elementwise strictly monotone activations with a closed-form derivative. It
starts at the linear iVAE's unmixing (``fit_linear_ivae``, the linear
family's estimator) and is trained full-batch with L-BFGS.

Data: ``recipes/synthetic/conf/paper.toml`` (5 sources, 40 segments x 1000,
mixing by three layers of tanh(x) + 0.1 x, unit-norm rows). Beside the flow it
runs the ELBO iVAE with ``IVAESeparator``'s defaults and FastICA on the same
data, in one process; pass ``OMP_NUM_THREADS=1`` (the script also sets one
torch thread).

Measured results: benchmarks/README.md (section "Nonlinear core").
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sepkit._recipe import hardware, load_config, make_synthetic_data
from sepkit.methods.likelihood import fit_linear_ivae
from sepkit.metrics import mcc

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "recipes" / "synthetic" / "conf" / "paper.toml"
_LOG_2PI_E = math.log(2 * math.pi) + 1.0


class MonotoneAct(torch.nn.Module):
    """Elementwise strictly increasing map with a closed-form derivative.

    phi(x) = alpha x + sum_k a_k tanh(b_k (x - c_k))            (bumps of slope)
                     + sum_k d_k (x - tanh(e_k (x - c_k)) / e_k)  (dips of slope)

    with alpha, a_k, b_k, d_k, e_k > 0, so phi'(x) = alpha + sum_k a_k b_k
    sech^2(.) + sum_k d_k tanh^2(.) > 0. The bumps model saturations
    (tanh(x) + 0.1 x), the dips their inverses, whose slope grows in the tails.
    """

    def __init__(self, n_dims: int, n_knots: int = 4, dtype=torch.float64):
        super().__init__()
        knots = torch.linspace(-2.0, 2.0, n_knots, dtype=dtype)
        self.log_alpha = torch.nn.Parameter(torch.zeros(n_dims, dtype=dtype))
        small = torch.full((n_dims, n_knots), -4.0, dtype=dtype)
        self.raw_a = torch.nn.Parameter(small.clone())
        self.raw_b = torch.nn.Parameter(torch.zeros(n_dims, n_knots, dtype=dtype))
        self.raw_d = torch.nn.Parameter(small.clone())
        self.raw_e = torch.nn.Parameter(torch.zeros(n_dims, n_knots, dtype=dtype))
        self.c = torch.nn.Parameter(knots.repeat(n_dims, 1))

    def _coefs(self):
        sp = torch.nn.functional.softplus
        return (
            self.log_alpha.exp(),
            sp(self.raw_a),
            sp(self.raw_b) + 1e-3,
            sp(self.raw_d),
            sp(self.raw_e) + 1e-3,
        )

    def forward(self, h: torch.Tensor):
        """h (n_samples, n_dims) -> (phi(h), log phi'(h)) elementwise."""
        alpha, a, b, d, e = self._coefs()
        z = h[..., None] - self.c
        tb = torch.tanh(b * z)
        te = torch.tanh(e * z)
        y = alpha * h + (a * tb).sum(-1) + (d * (z + self.c - te / e)).sum(-1)
        dy = alpha + (a * b * (1 - tb * tb)).sum(-1) + (d * te * te).sum(-1)
        return y, torch.log(dy)

    def inverse(self, y: torch.Tensor, n_iter: int = 60) -> torch.Tensor:
        """phi^{-1}(y) by safeguarded Newton within a bracketing interval."""
        with torch.no_grad():
            lo = torch.full_like(y, -1.0)
            hi = torch.full_like(y, 1.0)
            # Grow the bracket until phi(lo) <= y <= phi(hi).
            for _ in range(200):
                f_lo = self.forward(lo)[0] - y
                f_hi = self.forward(hi)[0] - y
                bad_lo, bad_hi = f_lo > 0, f_hi < 0
                if not (bad_lo.any() or bad_hi.any()):
                    break
                lo = torch.where(bad_lo, 2 * lo, lo)
                hi = torch.where(bad_hi, 2 * hi, hi)
            x = 0.5 * (lo + hi)
            for _ in range(n_iter):
                f, logd = self.forward(x)
                f = f - y
                lo = torch.where(f < 0, x, lo)
                hi = torch.where(f >= 0, x, hi)
                step = x - f / logd.exp()
                inside = (step > lo) & (step < hi)
                x = torch.where(inside, step, 0.5 * (lo + hi))
            return x


class FlowCore(torch.nn.Module):
    """g(x) = M_L phi_{L-1}(... phi_1(M_1 (x - mean)) ...), invertible, exact log|det J|."""

    def __init__(self, n_dims: int, depth: int, n_knots: int = 4, dtype=torch.float64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_dims, dtype=dtype))
        eye = torch.eye(n_dims, dtype=dtype)
        self.mats = torch.nn.ParameterList([torch.nn.Parameter(eye.clone()) for _ in range(depth)])
        self.acts = torch.nn.ModuleList(
            [MonotoneAct(n_dims, n_knots, dtype) for _ in range(depth - 1)]
        )

    def forward(self, x: torch.Tensor):
        """x (n_samples, n_dims) -> (g(x), log|det J_g(x)| per sample)."""
        h = x - self.mean
        logdet = torch.zeros(x.shape[0], dtype=x.dtype)
        for i, M in enumerate(self.mats):
            h = h @ M.T
            logdet = logdet + torch.linalg.slogdet(M)[1]
            if i < len(self.acts):
                h, logd = self.acts[i](h)
                logdet = logdet + logd.sum(-1)
        return h, logdet

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = s
            for i in reversed(range(len(self.mats))):
                if i < len(self.acts):
                    h = self.acts[i].inverse(h)
                h = torch.linalg.solve(self.mats[i], h.T).T
            return h + self.mean

    def sources_np(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(X.T, dtype=self.mean.dtype))[0].numpy().T


def flow_nll(core: FlowCore, x: torch.Tensor, onehot: torch.Tensor, counts: torch.Tensor):
    """-log p(x|u) per sample, per-segment means and variances profiled out."""
    s, logdet = core(x)
    seg_mean = onehot.T @ s / counts[:, None]
    seg_sq = onehot.T @ (s * s) / counts[:, None]
    var = (seg_sq - seg_mean**2).clamp(min=1e-12)
    weights = counts / counts.sum()
    n_dims = s.shape[1]
    return 0.5 * (weights[:, None] * var.log()).sum() + 0.5 * n_dims * _LOG_2PI_E - logdet.mean()


def fit_flow_core(
    X: np.ndarray,
    u: np.ndarray,
    *,
    depth: int = 3,
    n_iter: int = 300,
    n_knots: int = 4,
    init: str = "last",
    random_state=None,
):
    """Fit g on X (n_dims, n_times) with segment labels u; returns the FlowCore."""
    del random_state  # deterministic: starts at the linear iVAE
    x = torch.as_tensor(np.ascontiguousarray(X.T), dtype=torch.float64)
    _, codes = np.unique(np.asarray(u), return_inverse=True)
    ct = torch.as_tensor(codes, dtype=torch.long)
    n_seg = int(ct.max()) + 1
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / x.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    white = (evecs / evals.sqrt()).T
    lin = fit_linear_ivae((xc @ white.T).T.numpy(), codes)
    W = torch.as_tensor(lin["unmixing"]) @ white
    core = FlowCore(x.shape[1], depth, n_knots)
    core.mean.copy_(mean)
    with torch.no_grad():
        if init == "first":
            core.mats[0].copy_(W)
        else:
            core.mats[0].copy_(white)
            core.mats[-1].copy_(torch.as_tensor(lin["unmixing"]))
    onehot = torch.nn.functional.one_hot(ct, n_seg).to(torch.float64)
    counts = onehot.sum(0)
    opt = torch.optim.LBFGS(
        core.parameters(),
        lr=1.0,
        max_iter=n_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = flow_nll(core, x, onehot, counts)
        loss.backward()
        return loss

    opt.step(closure)
    core.n_iter_ = int(opt.state[opt._params[0]]["n_iter"])
    core.linear_nll_ = lin["nll"]
    return core


def fit_flow(X, u, depth, seed, kw):
    core = fit_flow_core(X.astype(np.float64), u, depth=depth, random_state=seed, **kw)
    return core.sources_np(X.astype(np.float64))


def fit_elbo(X, u, n_sources, seed):
    from sepkit import IVAESeparator

    sep = IVAESeparator(n_sources, random_state=seed)
    return sep.fit(X, u).transform(X, u)


def fit_fastica(X, n_sources, seed):
    from sklearn.decomposition import FastICA

    est = FastICA(n_sources, whiten="unit-variance", max_iter=1000, random_state=seed)
    return est.fit_transform(X.T.astype(np.float64)).T


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--mixing-layers", type=int, default=3, help="depth of the data's mixing")
    p.add_argument("--depth", type=int, nargs="+", default=[3], help="linear maps in g")
    p.add_argument("--methods", nargs="+", default=["flow", "elbo", "fastica"])
    p.add_argument("--n-iter", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(PAPER, [])
    d = cfg["data"]
    rows = []  # (method, seed, mcc, seconds)
    for seed in args.seeds:
        X, S, u = make_synthetic_data(d, args.mixing_layers, seed)
        kw = {} if args.n_iter is None else {"n_iter": args.n_iter}
        runs = []  # (name, function, arguments), all run on this seed's data
        if "flow" in args.methods:
            runs += [(f"flow-d{k}", fit_flow, (X, u, k, seed, kw)) for k in args.depth]
        if "elbo" in args.methods:
            runs.append(("elbo-default", fit_elbo, (X, u, d["n_sources"], seed)))
        if "fastica" in args.methods:
            runs.append(("fastica", fit_fastica, (X, d["n_sources"], seed)))
        for name, run, run_args in runs:
            t0 = time.perf_counter()
            Z = run(*run_args)
            sec = time.perf_counter() - t0
            score = mcc(S, Z)
            rows.append((name, seed, score, sec))
            print(f"{name:14s} seed={seed} MCC={score:.3f} ({sec:.1f} s)", flush=True)
    print(f"\nhardware: {hardware('cpu')}")
    print(f"data: paper.toml, mixing depth {args.mixing_layers}, seeds {args.seeds}\n")
    print("| method | MCC per seed | median MCC | median s per fit |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        sel = [r for r in rows if r[0] == name]
        per = " / ".join(f"{r[2]:.3f}" for r in sel)
        med = statistics.median(r[2] for r in sel)
        sec = statistics.median(r[3] for r in sel)
        print(f"| {name} | {per} | {med:.3f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
