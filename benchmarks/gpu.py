"""Benchmark 4: training throughput of the convolutional iVAE core.

For several sizes (channels x window x batch x hidden) and kernel sizes 1 and
>1, times full training steps of :class:`sepkit.models.IVAE` (forward, -ELBO,
backward, Adam step, as in ``sepkit.train``) and reports windows/s, and the
achieved fraction of the device's matmul rate and memory bandwidth:

* FLOPs per step: counted by ``torch.utils.flop_counter.FlopCounterMode`` on
  one step (convolutions and matrix products, forward and backward; the
  elementwise work is left out, so this is the work a matmul unit can do).
* Bytes per step: every non-view ATen op of one step (forward, backward and
  optimiser) counted with the bytes of its tensor inputs and outputs, i.e. the
  traffic of an unfused execution. Kernels that fuse ops move less, so the
  bandwidth fraction is an upper estimate of what the step asks of memory.
* Peaks, measured in the same run on the same device: matmul FLOP/s of a
  large square fp32 product (and bf16 on CUDA), and copy bandwidth of a large
  tensor copy (read + write bytes / s).

On CUDA it runs on the GPU (``--precision bf16`` for bf16 autocast, as
``IVAESeparator(precision="bf16")``); on CPU it records CPU figures with the
threads torch has (``OMP_NUM_THREADS=1 python benchmarks/gpu.py`` for one).

Usage::

    python benchmarks/gpu.py                    # default sizes for the device
    python benchmarks/gpu.py --device cuda --precision bf16 --json gpu.json
    python benchmarks/gpu.py --sizes 64x1000x32x256 --kernels 1 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sepkit._recipe import hardware
from sepkit.models import IVAE

# channels x window (samples) x batch (windows) x hidden units
CPU_SIZES = ["19x256x8x64", "64x256x8x128", "64x1000x8x256"]
GPU_SIZES = ["19x1000x64x128", "64x1000x64x256", "64x1000x256x512", "128x2000x128x1024"]
N_SEGMENTS = 40  # distinct u values (window index)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, min_seconds=1.0, min_reps=3) -> float:
    """Median-free simple timer: repeat ``fn`` for at least ``min_seconds``; s per call."""
    fn()
    _sync(device)
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        if reps >= min_reps:
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return elapsed / reps


def peak_matmul(device, dtype=torch.float32) -> float:
    """FLOP/s of a large square matrix product."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _time(lambda: a @ b, device)
    return 2 * n**3 / seconds


def peak_copy(device) -> float:
    """Bytes/s (read + write) of copying a large tensor."""
    n_bytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.empty(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    src.normal_()
    seconds = _time(lambda: dst.copy_(src), device)
    return 2 * n_bytes / seconds


class _ByteCounter(TorchDispatchMode):
    """Sum of tensor input and output bytes of every non-view ATen op."""

    def __init__(self):
        super().__init__()
        self.n_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            for t in torch.utils._pytree.tree_leaves((args, kwargs, out)):
                if isinstance(t, torch.Tensor):
                    self.n_bytes += t.numel() * t.element_size()
        return out


def make_step(size: str, kernel_size: int, device, precision: str):
    n_channels, window, batch, hidden = (int(v) for v in size.split("x"))
    torch.manual_seed(0)
    model = IVAE(
        n_channels,
        min(n_channels, 16),
        n_segments=N_SEGMENTS,
        n_hidden=hidden,
        n_layers=3,
        kernel_size=kernel_size,
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    x = torch.randn(batch, n_channels, window, device=device)
    u = torch.randint(N_SEGMENTS, (batch, window), device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    def step():
        with autocast:
            loss = model(x, u)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, (n_channels, window, batch, hidden)


def measure(size, kernel_size, device, precision, peaks) -> dict:
    step, (n_channels, window, batch, hidden) = make_step(size, kernel_size, device, precision)
    step()  # build the optimiser state before counting
    with FlopCounterMode(display=False) as flops:
        step()
    with _ByteCounter() as counter:
        step()
    seconds = _time(step, device)
    flop_rate = flops.get_total_flops() / seconds
    byte_rate = counter.n_bytes / seconds
    matmul_peak = peaks["matmul_bf16" if precision == "bf16" else "matmul_fp32"]
    return dict(
        size=size,
        kernel_size=kernel_size,
        n_channels=n_channels,
        window=window,
        batch=batch,
        hidden=hidden,
        ms_per_step=1e3 * seconds,
        windows_per_s=batch / seconds,
        gflop_per_step=flops.get_total_flops() / 1e9,
        gflop_per_s=flop_rate / 1e9,
        matmul_fraction=flop_rate / matmul_peak,
        mb_per_step=counter.n_bytes / 1e6,
        gb_per_s=byte_rate / 1e9,
        bandwidth_fraction=byte_rate / peaks["copy"],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--sizes", nargs="+", default=None, help="CxTxBxH, e.g. 64x1000x32x256")
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    if args.precision == "bf16" and device.type != "cuda":
        raise SystemExit("--precision bf16 needs a CUDA device")
    sizes = args.sizes or (GPU_SIZES if device.type == "cuda" else CPU_SIZES)

    peaks = dict(matmul_fp32=peak_matmul(device), copy=peak_copy(device))
    if device.type == "cuda":
        peaks["matmul_bf16"] = peak_matmul(device, torch.bfloat16)
    rows = [measure(s, k, device, args.precision, peaks) for s in sizes for k in args.kernels]

    print(f"Machine: {hardware(device)}; device {device}, precision {args.precision}")
    print(
        f"Peaks measured in this run: matmul fp32 {peaks['matmul_fp32'] / 1e9:.1f} GFLOP/s"
        + (f", bf16 {peaks['matmul_bf16'] / 1e9:.1f} GFLOP/s" if "matmul_bf16" in peaks else "")
        + f"; copy {peaks['copy'] / 1e9:.1f} GB/s\n"
    )
    print(
        "| channels x window x batch x hidden | kernel | ms/step | windows/s | GFLOP/step | "
        "GFLOP/s | % matmul peak | MB/step | GB/s | % copy bandwidth |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['kernel_size']} | {r['ms_per_step']:.2f} | "
            f"{r['windows_per_s']:.0f} | {r['gflop_per_step']:.3f} | {r['gflop_per_s']:.1f} | "
            f"{100 * r['matmul_fraction']:.1f} | {r['mb_per_step']:.1f} | {r['gb_per_s']:.1f} | "
            f"{100 * r['bandwidth_fraction']:.1f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(dict(machine=hardware(device), peaks=peaks, rows=rows), indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
