"""The stored results of `make experiments` (experiments/results/*.json): provenance, and a live spot check.

The spot check re-runs seed 0 of the three initialisations at L = 2 for the first 200 steps of the stored study
(training is deterministic given the seeds, and the first 200 steps do not depend on the total number of steps)
and compares every statistic at the checkpoints 0, 50, 100 and 200 with the stored file, to a relative 1e-9.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT))

from experiments import depth_study  # noqa: E402
from flowlib.book import training as tr  # noqa: E402


def _load(name):
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(scope="module")
def study():
    return _load("depth_study.json")


def test_results_carry_their_provenance(study):
    for name in ("depth_study.json", "baselines.json", "geometry_study.json", "long_training.json"):
        prov = _load(name)["provenance"]
        for key in ("git_commit", "torch", "numpy", "python", "device", "cpu_time_s", "config"):
            assert key in prov, (name, key)
        assert len(prov["git_commit"]) == 40
    cfg = study["provenance"]["config"]
    assert len(cfg["seeds"]) >= 5 and cfg["inits"] == list(tr.INIT_KINDS)
    assert cfg == depth_study.CONFIG  # the script's configuration is the one stored
    E = len(cfg["seeds"]) * len(cfg["inits"])
    for L, run in study["depths"].items():
        assert set(run["checkpoints"]) == {str(c) for c in cfg["checkpoints"]}
        assert all(len(v) == E for v in run["checkpoints"][str(cfg["steps"])].values())
        assert np.isfinite(np.asarray(run["checkpoints"][str(cfg["steps"])]["test_loss"], dtype=float)).all()


def test_training_reduced_the_loss_of_every_network(study):
    steps = str(study["provenance"]["config"]["steps"])
    for run in study["depths"].values():
        before = np.asarray(run["checkpoints"]["0"]["test_loss"], dtype=float)
        after = np.asarray(run["checkpoints"][steps]["test_loss"], dtype=float)
        assert (after < 0.6 * before).all()  # measured: worst ratio 0.54 (L = 2), at most 0.25 for L >= 4


def test_spot_check_reproduces_the_stored_study(study):
    cfg = dict(study["provenance"]["config"], steps=200, checkpoints=[0, 50, 100, 200])
    seed = cfg["seeds"][0]
    live = depth_study.run_depth(2, cfg, seeds=[seed])
    S = len(study["provenance"]["config"]["seeds"])
    members = [i * S + cfg["seeds"].index(seed) for i in range(len(cfg["inits"]))]
    n = 0
    for step, ck in live["checkpoints"].items():
        stored = study["depths"]["2"]["checkpoints"][str(step)]
        for key, v in ck.items():
            ref = np.asarray(stored[key], dtype=float)[members]
            ok = np.isnan(ref) & np.isnan(v.numpy()) | np.isclose(v.numpy(), ref, rtol=1e-9, atol=1e-13)
            assert ok.all(), (step, key, v, ref)
            n += 1
    assert n >= 4 * 10


def test_long_training_extends_the_study(study):
    """The long run (L = 4, 8, 16, 24,000 steps) repeats the study's first 6,000 steps digit for digit."""
    from experiments import long_training

    long = _load("long_training.json")
    cfg = long["provenance"]["config"]
    assert cfg == long_training.CONFIG and cfg["steps"] == 4 * study["provenance"]["config"]["steps"]
    n = 0
    for L in cfg["depths"]:
        for step in study["provenance"]["config"]["checkpoints"]:
            for key, v in study["depths"][str(L)]["checkpoints"][str(step)].items():
                a = np.asarray(v, dtype=float)
                b = np.asarray(long["depths"][str(L)]["checkpoints"][str(step)][key], dtype=float)
                assert np.array_equal(a, b, equal_nan=True), (L, step, key)
                n += 1
    assert n >= 3 * 12 * 20


def test_baselines_reproduce():
    stored = _load("baselines.json")
    x, y = depth_study.test_prompts(depth_study.CONFIG)
    cfg = stored["provenance"]["config"]
    g = torch.Generator().manual_seed(cfg["fit_seed"])
    xf, yf = tr.regression_task(cfg["n_fit"], 8, 2, generator=g)
    live = tr.regression_baselines(x, y, fit_tokens=xf, fit_target=yf)
    for k in ("zero", "gd_one_step", "kernel_smoother", "softmax_smoother"):
        assert live[k] == pytest.approx(stored["loss"][k], rel=1e-9)
    assert stored["loss"]["least_squares"] < 1e-20
