"""Mean-field benchmark: one unit of time of the Transformer PDE, by particles, as N grows.

N tokens drawn from a Gaussian in R^2 go through a 10-layer residual stack of softmax attention
(``flowlib.residual_stack``, h = 1/10, so one unit of time). For each N it records the wall time,
the peak extra memory, and the sliced Wasserstein distance (exact per direction) between the tokens
and the Gaussian law that the same 10 layers produce in the mean-field limit
(``flowlib.solve_gaussian(..., method="layers")``). The distance should fall like N^(-1/2):
each factor 10 in N divides it by about 3.2.

Usage::

    python benchmarks/bench_meanfield.py                 # N = 10^3 ... 10^5 on the CPU
    python benchmarks/bench_meanfield.py --device cuda   # up to 10^6
    python benchmarks/bench_meanfield.py --quick         # a smoke test, saved apart
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import env_threads, fl, parse_device, save

LAYERS = 10


def problem(dtype=torch.float32):
    """The chapter-9 setting: Q, V and the initial Gaussian (shared with the chapter)."""
    Q = 0.5 * torch.tensor([[1.0, 0.5], [-0.5, 1.0]], dtype=dtype)
    V = torch.tensor([[0.4, -1.0], [1.0, 0.2]], dtype=dtype)
    mean0 = torch.tensor([0.5, 0.0], dtype=dtype)
    cov0 = torch.tensor([[0.5, 0.15], [0.15, 0.3]], dtype=dtype)
    return fl.SoftmaxAttention(Q=Q, V=V, beta=1.0), mean0, cov0


def run(device: torch.device, sizes: list[int], log=print) -> list[dict]:
    field, mean0, cov0 = problem()
    closure = fl.solve_gaussian(field, mean0.double(), cov0.double(), t1=1.0, n_steps=LAYERS, method="layers")
    field_dev = fl.SoftmaxAttention(Q=field.Q.to(device), V=field.V.to(device), beta=1.0)
    rows = []
    for N in sizes:
        g = torch.Generator().manual_seed(N)
        x0 = fl.gaussian_tokens(N, mean0, cov0, generator=g).to(device)

        def forward(x0=x0):
            return fl.residual_stack(field_dev, x0, n_layers=LAYERS).final

        if N <= 10_000:
            forward()  # warm-up; the large cases are long enough not to need one
        call = fl.measure_call(forward, device=device)
        xT = call.result
        stats = {"seconds": call.seconds, "peak_mib": None if call.peak_bytes is None else call.peak_bytes / 2**20}
        sw = fl.sliced_wasserstein_to_gaussian(
            xT.double().cpu(),
            closure.final_mean,
            closure.final_cov,
            n_projections=256,
            generator=torch.Generator().manual_seed(0),
        )
        row = {"N": N, "layers": LAYERS, **stats, "sw_to_closure": float(sw)}
        rows.append(row)
        log(f"N={N:>8}: {stats['seconds']:8.2f} s, peak +{stats['peak_mib']} MiB, SW to closure {float(sw):.4f}")
    if len(rows) >= 2:
        slope = np.polyfit(np.log([r["N"] for r in rows]), np.log([r["sw_to_closure"] for r in rows]), 1)[0]
        log(f"fitted slope of SW against N: {slope:.2f} (theory -0.5)")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--max-n", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="N up to 3162, saved apart (results/quick/)")
    args = p.parse_args()
    env_threads()
    device = parse_device(args.device)
    default_max = 1_000_000 if device.type == "cuda" else 100_000
    max_n = 3_162 if args.quick else (args.max_n or default_max)
    sizes = [n for n in (1_000, 3_162, 10_000, 31_623, 100_000, 316_228, 1_000_000) if n <= max_n]
    t0 = time.perf_counter()
    print(f"device: {fl.describe_device(device)}")
    rows = run(device, sizes)
    path = save("meanfield", device, {"rows": rows, "wall_seconds": time.perf_counter() - t0}, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
