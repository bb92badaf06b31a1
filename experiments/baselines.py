"""Chapter 10, study 0: reference predictors on the test prompts of depth_study.py.

Predict zero, least squares (the optimum of the noise-free task), one gradient-descent step (what one linear
attention layer computes, von Oswald et al. 2023), a Nadaraya-Watson kernel smoother and a softmax dot-product
smoother; tuned constants are fitted on other prompts (seed ``fit_seed``). A bootstrap over the test prompts gives
each loss a 95% interval. Output: experiments/results/baselines.json. Run: ``python experiments/baselines.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import _common  # noqa: E402
from experiments.depth_study import CONFIG as DEPTH_CONFIG  # noqa: E402
from experiments.depth_study import test_prompts  # noqa: E402
from flowlib.book import training as tr  # noqa: E402

CONFIG = {"fit_seed": 8, "n_fit": 4096, "bootstrap": 1000, "bootstrap_seed": 0}


def main() -> None:
    torch.set_num_threads(1)
    cpu0 = time.process_time()
    prov = _common.provenance(config=CONFIG, depth_config=DEPTH_CONFIG)
    x, y = test_prompts(DEPTH_CONFIG)
    g = torch.Generator().manual_seed(CONFIG["fit_seed"])
    xf, yf = tr.regression_task(CONFIG["n_fit"], DEPTH_CONFIG["n_context"], DEPTH_CONFIG["dim"] - 1, generator=g)
    errors: dict = {}
    point = tr.regression_baselines(x, y, fit_tokens=xf, fit_target=yf, errors=errors)
    names = ["zero", "least_squares", "gd_one_step", "kernel_smoother", "softmax_smoother"]
    gb = torch.Generator().manual_seed(CONFIG["bootstrap_seed"])
    idx = torch.randint(0, len(y), (CONFIG["bootstrap"], len(y)), generator=gb)  # resample the test prompts
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    ci = {k: errors[k][idx].mean(-1).quantile(q).tolist() for k in names}
    prov.update(cpu_time_s=time.process_time() - cpu0)
    path = _common.write("baselines.json", {"provenance": prov, "loss": point, "ci95": ci})
    print(f"wrote {path}: " + ", ".join(f"{k} {point[k]:.3f}" for k in names), flush=True)


if __name__ == "__main__":
    main()
