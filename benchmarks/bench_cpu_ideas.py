"""CPU speed ideas that were measured and left out of the library: prints what each gives here.

    python benchmarks/bench_cpu_ideas.py [--rounds 15] [--compile] [--allocator]

1. ``fused``: BatchNorm (training mode, no affine) + LeakyReLU (+ 2x2 max-pool) as one autograd function
   with a hand-written backward. Max-pooling commutes with the per-channel increasing map
   x -> leaky_relu((x - mean) * rstd), so the map runs on the pooled quarter; the batch statistics are
   two tiled sums; ties go to the first maximum, as max_pool2d's do. Checked against the native layers in
   float64, then timed against them, interleaved, at the shapes of the MNIST and CIFAR-10 networks.
2. ``steps``: one training step (Adam) of the MNIST encoder and autoencoder as the library runs it
   (float32, channels-last) against bf16 autocast and, with ``--compile``, ``torch.compile``.
3. ``--allocator``: glibc keeping freed memory (``GLIBC_TUNABLES`` mmap and trim thresholds) in fresh
   processes: an isolated step, then a real DeepSAD epoch (``epoch_timer.py``; needs ``BADSAD_DATA``).

One torch thread; medians of ``--rounds`` interleaved pairs; 1 and 2 run with glibc keeping freed memory
(the script restarts itself so), as a long training run's allocator ends up doing. Run it on an otherwise
idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from badsad_lib.networks import Autoencoder, build_encoder, place

aten = torch.ops.aten
HERE = Path(__file__).resolve().parent
TUNED = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"}


def _tiled(v: torch.Tensor, rows: int) -> tuple[int, torch.Tensor]:
    """(t, v repeated t times): a per-channel vector laid over t rows of an (M, C) view at once, so that
    broadcasts run on rows of about 128 values instead of C."""
    t = max(1, 128 // v.numel())
    while t > 1 and rows % t:
        t //= 2
    return t, v.repeat(t)


def _affine(x2: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """x2 (M, C) * scale (C,) [+ shift (C,)], computed on the tiled view."""
    m, c = x2.shape
    t, s = _tiled(scale, m)
    wide = x2.reshape(m // t, t * c)
    out = wide * s if shift is None else torch.addcmul(_tiled(shift, m)[1], wide, s)
    return out.reshape(m, c)


class NormActPool(torch.autograd.Function):
    """leaky_relu(batch_norm(x)) then, if ``pool``, max_pool2d(2, 2); x (N, C, H, W) channels-last."""

    @staticmethod
    def forward(ctx, x, eps: float, slope: float, pool: bool):
        n, c, h, w = x.shape
        m = n * h * w
        flat = x.permute(0, 2, 3, 1).reshape(m, c)
        mean = flat.sum(0) / m
        centred = _affine(flat, torch.ones_like(mean), -mean)
        var = (centred * centred).sum(0) / m
        rstd = (var + eps).rsqrt()
        p, idx = aten.max_pool2d_with_indices(x, [2, 2], [2, 2]) if pool else (x, None)
        ph = p.permute(0, 2, 3, 1)
        z = _affine(ph.reshape(-1, c), rstd, -mean * rstd).reshape(ph.shape)
        ctx.save_for_backward(x, idx, z, mean, rstd)
        ctx.slope, ctx.pool = slope, pool
        return F.leaky_relu(z, slope).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, gy):
        x, idx, z, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        m = n * h * w
        gz = aten.leaky_relu_backward(gy.permute(0, 2, 3, 1), z, ctx.slope, False).reshape(-1, c)
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); g is zero off the pooled maxima, where xhat = z
        a, b = gz.sum(0) / m, (gz * z.reshape(-1, c)).sum(0) / m
        beta = -rstd * rstd * b
        alpha = -rstd * a - beta * mean
        gp = _affine(gz, rstd).reshape(z.shape).permute(0, 3, 1, 2)
        lin = _affine(x.permute(0, 2, 3, 1).reshape(m, c), beta, alpha).reshape(n, h, w, c).permute(0, 3, 1, 2)
        if ctx.pool:
            gx = aten.max_pool2d_with_indices_backward(gp, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
            return gx.add_(lin), None, None, None
        return lin.add_(gp), None, None, None


def native(x, pool: bool):
    y = F.leaky_relu(F.batch_norm(x, None, None, training=True, eps=1e-4), 0.01)
    return F.max_pool2d(y, 2, 2) if pool else y


def fused(x, pool: bool):
    return NormActPool.apply(x, 1e-4, 0.01, pool)


def interleaved(a, b, rounds: int, calls: int = 10) -> tuple[float, float]:
    """Median milliseconds per call of a() and b(), timed in alternating batches of ``calls``."""
    ta, tb = [], []
    a(), b()
    for _ in range(rounds):
        for f, seen in ((a, ta), (b, tb)):
            start = time.perf_counter()
            for _ in range(calls):
                f()
            seen.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(ta), statistics.median(tb)


def bench_fused(rounds: int) -> None:
    print("1. BatchNorm + LeakyReLU (+ max-pool) fused, against the native layers (fwd + bwd, ms)")
    shapes = [((128, 8, 28, 28), True), ((128, 4, 14, 14), True), ((128, 4, 8, 8), False), ((128, 8, 14, 14), False),
              ((128, 32, 32, 32), True), ((128, 64, 16, 16), True), ((128, 128, 8, 8), True),
              ((128, 64, 8, 8), False), ((128, 32, 16, 16), False)]
    for shape, pool in shapes:
        x = torch.randn(shape, dtype=torch.float64)
        x[:, :, :6, :6] = 0  # ties, as a zero background gives
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn(native(x.detach(), pool).shape, dtype=torch.float64)
        want, got = native(x, pool), fused(x, pool)
        errors = [(want - got).abs().max().item(),
                  (torch.autograd.grad(want, x, g)[0] - torch.autograd.grad(got, x, g)[0]).abs().max().item()]
        x = x.detach().float().contiguous(memory_format=torch.channels_last).requires_grad_()
        g = g.float().contiguous(memory_format=torch.channels_last)
        t_native, t_fused = interleaved(lambda: torch.autograd.grad(native(x, pool), x, g),
                                        lambda: torch.autograd.grad(fused(x, pool), x, g), rounds)
        print(f"   {str(shape):18s} {'pool' if pool else '    '}  native {t_native:6.2f}  fused {t_fused:6.2f}  "
              f"x{t_native / t_fused:.2f}   float64 error {max(errors):.0e}")


def _step(kind: str, bf16: bool = False, compiled: bool = False):
    torch.manual_seed(0)
    x = torch.rand(128, 1, 28, 28)
    net = place(build_encoder("mnist") if kind == "encoder" else Autoencoder("mnist"), "cpu")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x).float()
        return out.square().sum() if kind == "encoder" else (out - x).square().mean()

    forward = torch.compile(loss) if compiled else loss

    def step():
        value = forward()
        opt.zero_grad()
        value.backward()
        opt.step()
    return step


def bench_steps(rounds: int, compiled: bool) -> None:
    print("2. one training step, MNIST, batch 128 (ms): float32 channels-last (shipped) against variants")
    for kind in ("encoder", "autoencoder"):
        variants = [("bf16 autocast", _step(kind, bf16=True))]
        if compiled:
            start = time.perf_counter()
            step = _step(kind, compiled=True)
            step()
            print(f"   torch.compile of the {kind} step took {time.perf_counter() - start:.0f} s to compile")
            variants.append(("torch.compile", step))
        for name, step in variants:
            t_ship, t_var = interleaved(_step(kind), step, rounds, calls=5)
            print(f"   {kind:12s} shipped {t_ship:6.2f}  {name} {t_var:6.2f}  x{t_ship / t_var:.2f}")


_COLD_STEP = """
import statistics, time, torch
from badsad_lib.networks import build_encoder, place
torch.set_num_threads(1)
x = torch.rand(128, 1, 28, 28)
net = place(build_encoder("mnist"), "cpu")
opt = torch.optim.Adam(net.parameters(), lr=1e-4)
seen = []
for i in range(60):
    start = time.perf_counter()
    loss = net(x).square().sum(); opt.zero_grad(); loss.backward(); opt.step()
    seen.append(time.perf_counter() - start)
print(statistics.median(seen[10:]) * 1e3)
"""


def bench_allocator(rounds: int) -> None:
    print("3. glibc keeping freed memory, fresh processes (ms per isolated step; s per real DeepSAD epoch)")
    runs = {"isolated step": [sys.executable, "-c", _COLD_STEP],
            "DeepSAD epoch": [sys.executable, str(HERE / "epoch_timer.py"), "deepsad", "--threads", "1"]}
    for name, command in runs.items():
        seen = {"default": [], "tuned": []}
        for r in range(rounds):
            for label in (("default", "tuned") if r % 2 == 0 else ("tuned", "default")):
                env = {**os.environ, **(TUNED if label == "tuned" else {})}
                out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
                last = out.strip().splitlines()[-1]
                seen[label].append(json.loads(last)["seconds"] if last.startswith("{") else float(last))
        base, tuned = (statistics.median(seen[k]) for k in ("default", "tuned"))
        print(f"   {name:14s} default {base:7.3f}  tuned {tuned:7.3f}  x{base / tuned:.2f}  ({rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (about 30 s to compile)")
    parser.add_argument("--allocator", action="store_true", help="also time glibc's allocator settings (minutes)")
    args = parser.parse_args()
    if sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ:
        # time 1 and 2 as a long training process runs: its allocator has long stopped mapping fresh pages
        # for each step (see 3), which a short script's would still do, adding page faults to every kernel
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **TUNED})
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} cores")
    bench_fused(args.rounds)
    bench_steps(args.rounds, args.compile)
    if args.allocator:
        bench_allocator(max(2, args.rounds // 5))


if __name__ == "__main__":
    main()
