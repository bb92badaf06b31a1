"""Chapter 10, study 1: residual attention networks trained at depths L = 2..64 from three initialisations.

Five seeds per (initialisation, depth); every member of one seed sees the same prompts. At log-spaced checkpoints
of training the script records, per member: the test loss, robust regularity statistics of the weights in depth
(flowlib.book.training.depth_statistics) and of the training update, and the refinement gap; after all depths it
compares the networks trained at L and 2L (depth functions and predictions). Output:
experiments/results/depth_study.json (and depth_study_weights.json: the final weights at L = 8 and 32).

Run: ``python experiments/depth_study.py`` (about 26 min of CPU time on one core; uses a GPU when present).
``make experiments`` runs depth 64 and the other depths in two parallel processes (about 13 min on two cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import _common  # noqa: E402
from flowlib.book import training as tr  # noqa: E402

CONFIG = {
    "inits": list(tr.INIT_KINDS),
    "seeds": [0, 1, 2, 3, 4],
    "data_seed_offset": 1000,
    "depths": [2, 4, 8, 16, 32, 64],
    "steps": 6000,
    "lr": 0.1,
    "clip": 1.0,
    "batch": 16,
    "n_context": 8,
    "dim": 3,
    "t1": 1.0,
    "beta": 1.0,
    "scale": 0.3,
    "noise": 0.05,
    "checkpoints": [0, 50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4500, 6000],
    "test_seed": 7,
    "n_test": 1024,
    "gap_prompts": 256,
    "curve_window": 50,
    "dtype": "float64",
}


def test_prompts(config: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(config["test_seed"])
    x, y = tr.regression_task(config["n_test"], config["n_context"], config["dim"] - 1, generator=g)
    return x.to(device), y.to(device)


def initial_weights(L: int, config: dict, seeds: list[int]) -> torch.Tensor:
    """Members ordered (init, seed): member i * S + s is init i, seed s."""
    return torch.stack(
        [
            tr.init_stack(kind, L, config["dim"], seed=s, scale=config["scale"], noise=config["noise"])
            for kind in config["inits"]
            for s in seeds
        ]
    )


def measure(net: tr.EnsembleNet, W0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_gap: int) -> dict:
    """Per-member measurements of one checkpoint (lists of length E)."""
    W = net.weights()
    with torch.no_grad():
        pred = net(x.expand(net.n_members, *x.shape))[..., -1, -1]
        out = {"test_loss": (pred - y).pow(2).mean(-1)}
        U = W - W0
        out["update_rms"] = U.pow(2).sum(dim=(-3, -2, -1)).mean(-1).sqrt()
        if net.n_layers >= 2:
            for k, v in tr.depth_statistics(W).items():
                out[k] = v
            for k, v in tr.depth_statistics(U).items():
                out["update_" + k] = v
        fine = tr.EnsembleNet(tr.refine(W.transpose(0, 1)).transpose(0, 1), t1=net.t1, beta=net.beta).to(W.device)
        xg = x[:n_gap].expand(net.n_members, n_gap, *x.shape[1:])
        out["refinement_gap"] = (net(xg) - fine(xg)).norm(dim=-1).mean(dim=(-2, -1))
    return {k: v.cpu() for k, v in out.items()}, pred.cpu(), W.clone().cpu()  # W is updated in place later


def run_depth(L: int, config: dict, seeds: list[int] | None = None, device: torch.device | str = "cpu") -> dict:
    """Train all members of depth ``L``; return checkpoints (per-member measurements), curves and weights."""
    seeds = list(config["seeds"] if seeds is None else seeds)
    x, y = test_prompts(config, device)
    W0 = initial_weights(L, config, seeds).to(device)
    net = tr.EnsembleNet(W0, t1=config["t1"], beta=config["beta"]).to(device)
    ckpts: dict[int, dict] = {}
    preds: dict[int, torch.Tensor] = {}
    weights: dict[int, torch.Tensor] = {}

    def on_ckpt(step: int, n: tr.EnsembleNet) -> None:
        ckpts[step], preds[step], weights[step] = measure(n, W0, x, y, config["gap_prompts"])

    hist = tr.train_ensemble(
        net,
        steps=config["steps"],
        data_seeds=[config["data_seed_offset"] + s for s in seeds],
        batch=config["batch"],
        n_context=config["n_context"],
        lr=config["lr"],
        clip=config["clip"],
        checkpoints=tuple(config["checkpoints"]),
        on_checkpoint=on_ckpt,
    )
    w = config["curve_window"]
    curve = hist[: (len(hist) // w) * w].reshape(-1, w, hist.shape[1]).mean(1)
    return {"checkpoints": ckpts, "curve": curve, "predictions": preds, "weights": weights, "W0": W0.cpu()}


def cross_depth(a: dict, b: dict, config: dict) -> dict:
    """Networks trained at L (``a``) against those trained at 2L (``b``), per checkpoint and member."""
    out = {}
    for step in config["checkpoints"]:
        Wa, Wb = a["weights"][step], b["weights"][step]
        Ua, Ub = Wa - a["W0"], Wb - b["W0"]
        coarse_W, coarse_U = tr.coarsen(Wb), tr.coarsen(Ub)
        rms = lambda Z: Z.pow(2).sum(dim=(-3, -2, -1)).mean(-1).sqrt()  # noqa: E731
        pa, pb = a["predictions"][step], b["predictions"][step]
        out[step] = {
            "weight_distance": rms(coarse_W - Wa),
            "update_distance": rms(coarse_U - Ua),
            "update_size": rms(Ua),
            "prediction_distance": (pa - pb).pow(2).mean(-1).sqrt(),
        }
    return out


CACHE = _common.RESULTS / "cache"  # per-depth runs (not committed), so that depths can run in parallel processes


def merge(parts: list[tuple[list[int], dict]], config: dict) -> dict:
    """Runs of one depth for disjoint seed subsets -> the run of all seeds (members in (init, seed) order)."""
    seeds = config["seeds"]
    where = {}  # (init index, seed) -> (part, member index in part)
    for p, (sub, _) in enumerate(parts):
        for i in range(len(config["inits"])):
            for j, s in enumerate(sub):
                where[i, s] = (p, i * len(sub) + j)
    order = [where[i, s] for i in range(len(config["inits"])) for s in seeds]

    def cat(get, axis=0):
        return torch.stack([get(parts[p][1]).select(axis, m) for p, m in order], dim=axis)

    first = parts[0][1]
    return {
        "checkpoints": {
            step: {k: cat(lambda r, step=step, k=k: r["checkpoints"][step][k]) for k in first["checkpoints"][step]}
            for step in first["checkpoints"]
        },
        "curve": cat(lambda r: r["curve"], axis=1),
        "predictions": {step: cat(lambda r, step=step: r["predictions"][step]) for step in first["predictions"]},
        "weights": {step: cat(lambda r, step=step: r["weights"][step]) for step in first["weights"]},
        "W0": cat(lambda r: r["W0"]),
    }


def load_cached(cache: Path, config: dict) -> tuple[dict, dict] | None:
    """The run and timing stored at ``cache`` if it exists and was made with ``config``, else None."""
    if not cache.exists():
        return None
    blob = torch.load(cache, weights_only=False)
    return (blob["run"], blob["timing"]) if blob["config"] == config else None


def train_and_cache(L: int, config: dict, cache: Path, device: torch.device | str) -> tuple[dict, dict]:
    """Train every member of depth ``L`` under ``config``, store run and timing at ``cache``, return both."""
    c0, w0 = time.process_time(), time.perf_counter()
    run = run_depth(L, config, device=device)
    timing = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}
    torch.save({"config": config, "run": run, "timing": timing}, cache)
    print(f"{cache.stem}: {timing['cpu_s']:.0f} s CPU, {timing['wall_s']:.0f} s wall", flush=True)
    return run, timing


def assemble(runs: dict, timing: dict, config: dict, prov: dict) -> dict:
    """The results file: provenance (with CPU and wall time), members, per-depth checkpoints and curves, cross-depth."""
    prov.update(
        cpu_time_s=sum(t["cpu_s"] for t in timing.values()),
        wall_time_s=sum(t["wall_s"] for t in timing.values()),
        per_depth=timing,
        finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return {
        "provenance": prov,
        "members": [{"init": k, "seed": s} for k in config["inits"] for s in config["seeds"]],
        "depths": {str(L): {"checkpoints": r["checkpoints"], "curve": r["curve"]} for L, r in runs.items()},
        "cross_depth": {
            f"{L}-{2 * L}": cross_depth(runs[L], runs[2 * L], config) for L in config["depths"] if 2 * L in runs
        },
    }


def main(argv: list[str]) -> None:
    """``depth_study.py``: run every depth not yet cached, then assemble; ``--only L [L ...]``: just those depths;
    ``--only L --seeds s [s ...]``: one depth for some seeds (the assembly merges such parts); ``--available``:
    assemble the depths already cached and skip the others (recorded in the provenance as ``depths_run``)."""
    torch.set_num_threads(1)
    dev = _common.device()
    seeds = None
    if "--seeds" in argv:
        seeds = [int(a) for a in argv[argv.index("--seeds") + 1 :]]
        argv = argv[: argv.index("--seeds")]
    available_only = "--available" in argv  # assemble the cached depths only (skip depths not yet run)
    argv = [a for a in argv if a != "--available"]
    only = [int(a) for a in argv[argv.index("--only") + 1 :]] if "--only" in argv else None
    CACHE.mkdir(parents=True, exist_ok=True)
    if seeds is not None:
        (L,) = only
        c0, w0 = time.process_time(), time.perf_counter()
        run = run_depth(L, CONFIG, seeds=seeds, device=dev)
        timing = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}
        tag = "_".join(map(str, seeds))
        torch.save({"config": CONFIG, "seeds": seeds, "run": run, "timing": timing}, CACHE / f"L{L}_seeds{tag}.pt")
        print(f"L = {L:>3}, seeds {seeds}: {timing['cpu_s']:.0f} s CPU, {timing['wall_s']:.0f} s wall", flush=True)
        return
    prov = _common.provenance(config=CONFIG, device=dev)
    runs, timing = {}, {}
    for L in only or CONFIG["depths"]:
        cache = CACHE / f"L{L}.pt"
        stored = load_cached(cache, CONFIG) if only is None else None
        if stored is not None:
            runs[L], timing[L] = stored
            continue
        parts = [torch.load(f, weights_only=False) for f in sorted(CACHE.glob(f"L{L}_seeds*.pt"))]
        parts = [b for b in parts if b["config"] == CONFIG]
        if only is None and sorted(s for b in parts for s in b["seeds"]) == sorted(CONFIG["seeds"]):
            runs[L] = merge([(b["seeds"], b["run"]) for b in parts], CONFIG)
            timing[L] = {k: sum(b["timing"][k] for b in parts) for k in ("cpu_s", "wall_s")}
            timing[L]["parallel_parts"] = len(parts)
            continue
        if available_only:
            continue
        runs[L], timing[L] = train_and_cache(L, CONFIG, cache, dev)
    if only is not None:
        return
    prov["depths_run"] = sorted(runs)
    payload = assemble(runs, timing, CONFIG, prov)
    members = payload["members"]
    path = _common.write("depth_study.json", payload)
    weights = {
        "provenance": {"see": "depth_study.json", "git_commit": prov["git_commit"]},
        "members": members,
        "final": {str(L): runs[L]["weights"][CONFIG["steps"]] for L in (8, 32)},
        "initial": {str(L): runs[L]["W0"] for L in (8, 32)},
    }
    _common.write("depth_study_weights.json", weights)
    print(
        f"wrote {path}: {prov['cpu_time_s']:.0f} s CPU, {prov['wall_time_s']:.0f} s wall (sum over depths)", flush=True
    )


if __name__ == "__main__":
    main(sys.argv[1:])
