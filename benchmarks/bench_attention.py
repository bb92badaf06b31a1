"""Time and peak memory of one softmax-attention velocity evaluation, flowlib against its peers.

For N tokens in R^d, every implementation computes ``v_i = sum_j softmax_j(beta <x_i, x_j>) x_j``
with ``beta = 1/sqrt(d)``:

* ``numpy``: a plain NumPy version (logits, max-shift, exp, normalise): what one writes first;
* ``torch dense``: the same three lines in PyTorch (``softmax(beta x x^T) @ x``);
* ``torch sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` called directly on
  ``(1, 1, N, d)`` tensors with ``scale=beta``: the best fused kernel PyTorch offers;
* ``keops``: a KeOps ``LazyTensor`` reduction, only if ``pykeops`` is installed;
* ``flowlib <backend>``: the public field ``flowlib.SoftmaxAttention(beta=beta, backend=...)``,
  called as a user calls it (with its input checks), for ``auto``, ``dense``, ``chunked`` and ``sdpa``.

Cases that would need more than half the free memory, or that are predicted (from the last N, at
O(N^2)) to take longer than ``--max-seconds``, are skipped and marked so. The headline check of
issue #5 (N = 32768, d = 4, float32, public field against direct SDPA, interleaved repeats) and a
table for the other fields are measured too. Results go to ``benchmarks/results/*.json``;
``benchmarks/report.py`` turns them into the book's page.

Usage::

    python benchmarks/bench_attention.py              # full grid on the default device
    python benchmarks/bench_attention.py --quick      # a small grid, for a smoke test
    python benchmarks/bench_attention.py --device cuda --max-n 1000000
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import available_bytes, env_threads, fl, parse_device, save, time_and_memory

SIZES = [1_000, 3_162, 10_000, 32_768, 100_000, 316_228, 1_000_000]
DIMS = [2, 3, 16]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
FLOWLIB_BACKENDS = ["auto", "dense", "chunked", "sdpa"]


def numpy_attention(x: np.ndarray, beta: float) -> np.ndarray:
    logits = beta * (x @ x.T)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    return (logits @ x) / logits.sum(axis=1, keepdims=True)


def torch_dense(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.softmax(beta * (x @ x.T), dim=-1) @ x


def torch_sdpa(x: torch.Tensor, beta: float) -> torch.Tensor:
    x4 = x.view(1, 1, *x.shape)
    return F.scaled_dot_product_attention(x4, x4, x4, scale=beta).view(x.shape)


def keops_attention():
    try:
        from pykeops.torch import LazyTensor
    except ImportError:
        return None

    def run(x: torch.Tensor, beta: float) -> torch.Tensor:
        xi, xj = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
        s = beta * (xi * xj).sum(-1)
        return s.sumsoftmaxweight(xj, axis=1)

    return run


def implementations(device: torch.device) -> dict:
    impls = {
        "numpy": ("dense", lambda x, b: numpy_attention(x, b)),
        "torch dense": ("dense", torch_dense),
        "torch sdpa": ("linear", torch_sdpa),
    }
    keops = keops_attention()
    if keops is not None:
        impls["keops"] = ("linear", keops)
    for backend in FLOWLIB_BACKENDS:
        memory = "dense" if backend == "dense" else "linear"
        impls[f"flowlib {backend}"] = (memory, _flowlib(backend))
    return impls


def _flowlib(backend: str):
    def run(x: torch.Tensor, beta: float) -> torch.Tensor:
        return fl.SoftmaxAttention(beta=beta, backend=backend)(x)

    return run


def grid(device, sizes, dims, dtypes, max_seconds, log) -> list[dict]:
    rows = []
    impls = implementations(device)
    limit = available_bytes(device)
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for d in dims:
            last: dict[str, tuple[int, float]] = {}
            for N in sizes:
                g = torch.Generator(device="cpu").manual_seed(N + d)
                x = torch.randn(N, d, generator=g, dtype=dtype).to(device)
                beta = 1.0 / math.sqrt(d)
                for name, (memory, fn) in impls.items():
                    row = {"impl": name, "N": N, "d": d, "dtype": dtype_name}
                    if name == "numpy" and device.type != "cpu":
                        continue
                    need = 2 * N * N * x.element_size() if memory == "dense" else 0
                    prev = last.get(name)
                    predicted = prev[1] * (N / prev[0]) ** 2 if prev else 0.0
                    if need > limit:
                        row["skipped"] = f"needs {need / 2**30:.0f} GiB"
                    elif prev is None and name in last:
                        row["skipped"] = "skipped at a smaller N"
                    elif predicted > max_seconds:
                        row["skipped"] = f"predicted {predicted:.0f} s"
                    if "skipped" in row:
                        last[name] = None  # larger N are skipped too
                        rows.append(row)
                        continue
                    arg = x.cpu().numpy() if name == "numpy" else x
                    try:
                        row.update(time_and_memory(lambda fn=fn, arg=arg, beta=beta: fn(arg, beta), device))
                    except (RuntimeError, MemoryError) as err:  # out of memory on a device
                        row["skipped"] = f"failed: {type(err).__name__}"
                        last[name] = None
                        rows.append(row)
                        continue
                    last[name] = (N, row["seconds"])
                    rows.append(row)
                    log(row)
                del x
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _vm_hwm_mib() -> float | None:
    """The process's peak resident memory (Linux), read the way flowlib.measure_call reads it."""
    try:
        return fl.device._rss_kib("VmHWM") / 1024
    except (OSError, StopIteration):
        return None


def headline(device, rounds: int = 7, N: int = 32_768, d: int = 4) -> dict:
    """Public field against direct SDPA, interleaved so that both see the same machine state."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g).to(device)
    beta = 1.0 / math.sqrt(d)
    field = fl.SoftmaxAttention(beta=beta)
    ref = torch_sdpa(x, beta)
    err = float((field(x) - ref).abs().max())
    times = {"torch sdpa": [], "flowlib public field": []}
    peaks = {"torch sdpa": [], "flowlib public field": []}
    process_peak = []
    for _ in range(rounds):
        for name, fn in (("torch sdpa", lambda: torch_sdpa(x, beta)), ("flowlib public field", lambda: field(x))):
            stats = fl.measure_call(fn, device=device)
            times[name].append(stats.seconds)
            peaks[name].append(stats.peak_bytes)
            if name == "flowlib public field" and device.type == "cpu":
                process_peak.append(_vm_hwm_mib())
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "N": N,
        "d": d,
        "dtype": "float32",
        "rounds": rounds,
        "seconds": med,
        "ratio": med["flowlib public field"] / med["torch sdpa"],
        "peak_extra_mib": {k: (max(v) / 2**20 if v[0] is not None else None) for k, v in peaks.items()},
        "max_abs_difference": err,
        "backend_chosen_by_auto": fl.choose_backend(N, N, dtype=x.dtype, device=x.device),
    }
    if device.type == "cuda":
        out["process_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif process_peak and process_peak[0] is not None:
        out["process_peak_mib"] = max(process_peak)
    return out


def other_fields(device, sizes, log) -> list[dict]:
    """The other attention fields, float32, d = 4, with the auto backend: time and peak memory."""
    d = 4
    g = torch.Generator().manual_seed(1)
    H = 2
    fields = {
        "SoftmaxAttention": fl.SoftmaxAttention(beta=0.5),
        "L2Attention": fl.L2Attention(beta=0.5),
        "MultiHeadAttention (2 heads)": fl.MultiHeadAttention(
            Q=torch.randn(H, 2, d, generator=g),
            K=torch.randn(H, 2, d, generator=g),
            V=torch.randn(H, 2, d, generator=g),
        ),
        "SinkhornAttention (5 half-steps)": fl.SinkhornAttention(beta=0.5, n_half_steps=5),
        "SigmoidAttention": fl.SigmoidAttention(beta=0.5, bias=-1.0),
        "SphereAttention": fl.SphereAttention(beta=2.0),
        "SoftmaxAttention, causal": fl.SoftmaxAttention(beta=0.5, causal=True),
    }
    rows = []
    for N in sizes:
        x = fl.unit_normalize(torch.randn(N, d, generator=g)).to(device)
        for name, field in fields.items():
            field = _to(field, device)
            row = {"field": name, "N": N, "d": d, "dtype": "float32"}
            row.update(time_and_memory(lambda field=field, x=x: field(x), device, budget_s=1.0))
            rows.append(row)
            log(row)
    return rows


def _to(field, device):
    return field.to(device)  # fields are torch modules: their matrices and masks move once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="N up to 10^4, d = 2 and 16, float32 only")
    p.add_argument("--max-n", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=20.0, help="skip cases predicted to take longer")
    args = p.parse_args()
    env_threads()
    device = parse_device(args.device)
    sizes = [n for n in SIZES if args.max_n is None or n <= args.max_n]
    dims, dtypes = DIMS, list(DTYPES)
    if args.quick:
        sizes, dims, dtypes = [n for n in sizes if n <= 10_000], [2, 16], ["float32"]

    def log(row):
        mem = row.get("peak_mib")
        print(
            f"{row.get('impl', row.get('field')):34s} N={row['N']:>8} d={row['d']:>2} {row['dtype']}: "
            f"{row['seconds'] * 1e3:10.2f} ms  peak +{mem if mem is None else round(mem, 1)} MiB",
            flush=True,
        )

    t0 = time.perf_counter()
    print(f"device: {fl.describe_device(device)}")
    head = headline(device, rounds=3 if args.quick else 7)
    print(
        f"headline N=32768 d=4 float32: public field {head['seconds']['flowlib public field']:.3f} s, direct SDPA "
        f"{head['seconds']['torch sdpa']:.3f} s, ratio {head['ratio']:.3f}; process peak {head.get('process_peak_mib')} MiB"
    )
    rows = grid(device, sizes, dims, dtypes, args.max_seconds, log)
    field_sizes = [4_096, 32_768] if device.type == "cpu" else [32_768, 262_144]
    others = other_fields(device, field_sizes if not args.quick else [4_096], log)
    path = save(
        "attention",
        device,
        {
            "quick": args.quick,
            "headline": head,
            "grid": rows,
            "fields": others,
            "wall_seconds": time.perf_counter() - t0,
        },
        quick=args.quick,
    )
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
