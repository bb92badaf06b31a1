"""Chapter 10, study 2: the geometry of the tokens in trained networks, with controls.

Loads the final weights of depth_study.py at L = 32 (five seeds, three initialisations) and measures, on test
prompts, the mean token norm, the effective rank of the centred tokens and the mean pairwise cosine:

1. at the output of the trained network (depth T = 1), against its input and against the untrained network;
2. after running the trained depth function k = 1, 2, 4, 8, 16 times in a row (total depth k), against the
   linear-flow control in which every token attends only to itself, x_i <- x_i + h V_l x_i (the same layers with
   the attention matrix replaced by the identity);
3. in two regimes where collapse does happen: the same trained layers without the residual connection
   (x <- P(x) x V^T, pure attention, the setting of Dong, Cordonnier and Loukas 2021), and chapter 5's dynamics on
   the sphere (Q = K = V = I, tokens normalised after every step) run to T = 30.

Output: experiments/results/geometry_study.json. Run: ``python experiments/geometry_study.py`` (about a minute).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import _common  # noqa: E402
from experiments.depth_study import CONFIG as DEPTH_CONFIG  # noqa: E402
from flowlib import diagnostics  # noqa: E402
from flowlib.book import training as tr  # noqa: E402

CONFIG = {
    "L": 32,
    "n_prompts": 256,
    "prompt_seed": 17,
    "repeats": [1, 2, 4, 8, 16],
    "sphere_T": 30.0,
    "sphere_steps": 600,
    "sphere_beta": 1.0,
    "sphere_seed": 5,
    "sphere_n": 32,
    "sphere_d": 3,
}


def summary(x: torch.Tensor) -> dict:
    """Mean over prompts of token norm, centred effective rank and pairwise cosine; x is (..., prompts, n, d)."""
    return {
        "norm": x.norm(dim=-1).mean(dim=(-2, -1)),
        "rank": diagnostics.effective_rank(x, center=True).mean(-1),
        "cosine": diagnostics.mean_pairwise_cosine(x).mean(-1),
    }


def linear_flow(W: torch.Tensor, x: torch.Tensor, h: float) -> torch.Tensor:
    """The control: every token attends to itself only, x <- x + h V_l x, for W of shape (E, L, 3, d, d)."""
    for layer in range(W.shape[1]):
        V = W[:, layer, 2][:, None, None]
        x = x + h * (x[..., None, :] @ V.mT)[..., 0, :]
    return x


def pure_attention(net: tr.EnsembleNet, x: torch.Tensor) -> list[dict]:
    """No residual connection: x <- P(x) x V^T layer after layer (Dong et al.); summaries after each layer."""
    out = []
    for layer in range(net.n_layers):
        x = net.step(x, layer)
        if layer in (0, 1, 3, 7, 15, 31):
            out.append({"layer": layer + 1, **summary(x)})
    return out


def sphere_dynamics(config: dict) -> list[dict]:
    """Chapter 5's flow x_i' = P_{x_i}^perp sum_j softmax(beta <x_i, x_j>) x_j on the sphere (Euler + renormalise)."""
    g = torch.Generator().manual_seed(config["sphere_seed"])
    x = torch.randn(64, config["sphere_n"], config["sphere_d"], generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    h = config["sphere_T"] / config["sphere_steps"]
    out = [{"t": 0.0, **summary(x)}]
    for k in range(1, config["sphere_steps"] + 1):
        v = torch.softmax(config["sphere_beta"] * x @ x.mT, dim=-1) @ x
        v = v - (v * x).sum(-1, keepdim=True) * x
        x = x + h * v
        x = x / x.norm(dim=-1, keepdim=True)
        if k % (config["sphere_steps"] // 10) == 0:
            out.append({"t": k * h, **summary(x)})
    return out


def main() -> None:
    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    prov = _common.provenance(config=CONFIG, depth_config=DEPTH_CONFIG)
    stored = json.loads((_common.RESULTS / "depth_study_weights.json").read_text())
    L = CONFIG["L"]
    W = torch.tensor(stored["final"][str(L)], dtype=torch.float64)
    W0 = torch.tensor(stored["initial"][str(L)], dtype=torch.float64)
    E = W.shape[0]
    g = torch.Generator().manual_seed(CONFIG["prompt_seed"])
    x, _ = tr.regression_task(CONFIG["n_prompts"], 8, 2, generator=g)
    xe = x.expand(E, *x.shape)
    trained, untrained = tr.EnsembleNet(W), tr.EnsembleNet(W0)
    res: dict = {"input": summary(x)}
    with torch.no_grad():
        res["trained_T1"] = summary(trained(xe))
        res["untrained_T1"] = summary(untrained(xe))
        res["V_spectral_norm_mean"] = torch.linalg.matrix_norm(W[:, :, 2], ord=2).mean(-1)
        res["V_spectral_norm_mean_init"] = torch.linalg.matrix_norm(W0[:, :, 2], ord=2).mean(-1)
        att, lin = xe, xe
        res["repeat"] = []
        for k in range(1, max(CONFIG["repeats"]) + 1):
            att = trained(att)
            lin = linear_flow(W, lin, trained.h)
            if k in CONFIG["repeats"]:
                res["repeat"].append({"k": k, "attention": summary(att), "linear_flow": summary(lin)})
        res["pure_attention"] = pure_attention(trained, xe)
        res["sphere"] = sphere_dynamics(CONFIG)
    prov.update(cpu_time_s=time.process_time() - cpu0, wall_time_s=time.perf_counter() - wall0)
    payload = {"provenance": prov, "members": stored["members"], "results": res}
    path = _common.write("geometry_study.json", payload)
    print(f"wrote {path}: {prov['cpu_time_s']:.0f} s CPU", flush=True)


if __name__ == "__main__":
    main()
