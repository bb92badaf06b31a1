"""Chapter 10, study 3: does longer training change the conclusions? The depth study trained four times longer.

The networks of ``depth_study.py`` at L = 4, 8, 16 (same seeds, same prompt streams, same settings) trained for
24,000 steps instead of 6,000, with extra checkpoints at 9,000, 12,000, 18,000 and 24,000. Training is deterministic
given the seeds, so the first 6,000 steps repeat the depth study exactly (the chapter checks this); what is new is
how the loss and the statistics move over two more doublings of training time. Output:
experiments/results/long_training.json.

Run: ``python experiments/long_training.py`` (about 24 min of CPU time on one core);
``--only L [L ...]`` runs some depths into results/cache/ so that they can run in parallel processes
(``make experiments`` runs L = 16 and L = 4, 8 side by side, about 13 min on two cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import _common  # noqa: E402
from experiments.depth_study import CACHE, assemble, load_cached, train_and_cache  # noqa: E402
from experiments.depth_study import CONFIG as DEPTH_CONFIG  # noqa: E402

CONFIG = {
    **DEPTH_CONFIG,
    "depths": [4, 8, 16],
    "steps": 24000,
    "checkpoints": [*DEPTH_CONFIG["checkpoints"], 9000, 12000, 18000, 24000],
    "curve_window": 200,
}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    dev = _common.device()
    only = [int(a) for a in argv[argv.index("--only") + 1 :]] if "--only" in argv else None
    CACHE.mkdir(parents=True, exist_ok=True)
    prov = _common.provenance(config=CONFIG, device=dev)
    runs, timing = {}, {}
    for L in only or CONFIG["depths"]:
        cache = CACHE / f"long_L{L}.pt"
        stored = load_cached(cache, CONFIG) if only is None else None
        runs[L], timing[L] = stored if stored is not None else train_and_cache(L, CONFIG, cache, dev)
    if only is not None:
        return
    payload = assemble(runs, timing, CONFIG, prov)
    path = _common.write("long_training.json", payload)
    print(f"wrote {path}: {prov['cpu_time_s']:.0f} s CPU (sum over depths)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
