"""Visualisation helpers: they return figures, touch no global state and write no files (DESIGN 5.7)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import flowlib as fl  # noqa: E402
from flowlib import viz  # noqa: E402


@pytest.fixture
def traj():
    g = torch.Generator().manual_seed(0)
    x0 = fl.uniform_sphere(8, 2, generator=g)
    return fl.simulate(fl.SphereAttention(beta=1.0), x0, t1=3.0, n_steps=90, method="rk4", retraction=fl.unit_normalize)


def test_plots_return_figures_and_leave_rcparams(traj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = dict(matplotlib.rcParams)
    figs = [
        viz.plot_tokens(traj),
        viz.plot_tokens(traj.x[0]),
        viz.plot_error_vs_layers([4, 8, 16], {"euler": [1e-1, 5e-2, 2.5e-2], "heun": [1e-2, 2.5e-3, 6.25e-4]}),
        viz.plot_decay(traj.t, {"a": torch.exp(-traj.t)}, rate=1.0),
        viz.plot_weights(fl.SoftmaxAttention().weights(traj.final)),
    ]
    for f in figs:
        assert isinstance(f, matplotlib.figure.Figure)
        assert f.get_facecolor()[3] == 1.0  # opaque background
    assert dict(matplotlib.rcParams) == before
    assert os.listdir(tmp_path) == []
    ax_legend = figs[2].axes[0].get_legend().get_texts()
    assert "slope 1.00" in ax_legend[0].get_text() and "slope 2.00" in ax_legend[1].get_text()


def test_plot_tokens_3d(traj):
    g = torch.Generator().manual_seed(1)
    x0 = fl.uniform_sphere(6, 3, generator=g)
    t3 = fl.simulate(fl.SphereAttention(), x0, t1=1.0, n_steps=5, retraction=fl.unit_normalize)
    fig = viz.plot_tokens(t3)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.name == "3d"  # a 3-D axes, not a projection onto two coordinates
    # the six final tokens are drawn where they are: the scatter's 3-D offsets are the tokens
    pts = [c for c in ax.collections if hasattr(c, "_offsets3d")]
    assert pts, "no 3-D scatter of the tokens"
    xs, ys, zs = (torch.as_tensor(list(a), dtype=torch.float64) for a in pts[-1]._offsets3d)
    final = t3.final.to(torch.float64)
    assert len(xs) == 6 and torch.allclose(torch.stack([xs, ys, zs], -1), final, atol=1e-6)
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="d in"):
        viz.plot_tokens(torch.zeros(3, 4))


def test_animation_is_capped_and_closes_its_figure(traj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n_open = len(plt.get_fignums())
    anim = viz.animate_tokens(traj, max_frames=500, alt="tokens cluster")
    assert anim.n_frames == viz.MAX_FRAMES
    # every frame embedded once, plus the opening picture (the first frame); the site moves them into files
    assert anim.html.count("data:image/png") == anim.n_frames + 1
    assert anim._repr_html_() == anim.html
    assert anim.html.count('alt="tokens cluster"') == 1
    assert 'class="flowlib-player flowlib-animation"' in anim.html and 'data-play="1"' in anim.html
    small = viz.animate_tokens(traj, max_frames=10)
    assert small.n_frames == 10 and small.html.count("data:image/png") == 11
    assert len(small.html) < 1.5e6
    assert len(plt.get_fignums()) == n_open
    assert os.listdir(tmp_path) == []


def test_explore_caches_and_never_resimulates_on_step(traj):
    pytest.importorskip("ipywidgets")
    calls = []

    def make(beta):
        calls.append(beta)
        return traj

    w = viz.explore(make, beta=[0.5, 1.0, 2.0])
    assert calls == [0.5]
    beta_slider, step_slider = w.children[0], w.children[1]
    step_slider.value = 3
    step_slider.value = 10
    assert calls == [0.5]
    beta_slider.value = 2.0
    beta_slider.value = 0.5
    beta_slider.value = 2.0
    assert calls == [0.5, 2.0]
    assert len(w.cache) == 2


def test_part_two_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = dict(matplotlib.rcParams)
    F64 = torch.float64
    t, frac = fl.diagnostics.phase_diagram(
        [0.5, 2.0, 5.0], n=6, d=3, t1=2.0, n_systems=3, save_every=5, generator=torch.Generator().manual_seed(0)
    )
    f1 = viz.plot_phase_diagram(t, [0.5, 2.0, 5.0], frac, curve=([1.0, 2.0], [0.5, 5.0]))
    S0 = torch.stack([torch.tensor([[1.0, 0.2], [0.2, 0.5]], dtype=F64), torch.eye(2, dtype=F64)])
    q = torch.tensor([[1.0, 0.0]], dtype=F64)
    sol = fl.solve_gaussian("softmax", torch.zeros(2, dtype=F64), S0, q, -q, t1=5.0, n_steps=50)
    f2 = viz.plot_covariance_disc(sol.cov)
    grid = fl.make_grid(-3, 3, 30)
    rho0 = fl.pde.density_on_grid(grid, lambda x: torch.exp(-(x[..., 0] ** 2)))
    pde_sol = fl.solve_transformer_pde(fl.SoftmaxAttention(V=-torch.eye(1, dtype=F64)), rho0, grid, t1=0.5, n_save=2)
    x0 = torch.linspace(-1, 1, 20, dtype=F64)[:, None]
    parts = fl.simulate(fl.SoftmaxAttention(V=-torch.eye(1, dtype=F64)), x0, t1=0.5, n_steps=10, save_every=5)
    f3 = viz.plot_density_1d(pde_sol, particles=parts)
    f4 = viz.plot_gaussian_ellipses(torch.tensor([1.0, -1.0]), torch.tensor([[4.0, 0.0], [0.0, 1.0]]), n_sigma=(1, 2))
    x1, y1 = f4.axes[0].get_lines()[0].get_data()
    assert np.allclose((x1 - 1) ** 2 / 4 + (y1 + 1) ** 2, 1.0)  # the 1-sigma ellipse of diag(4, 1)
    with pytest.raises(ValueError, match="shape"):
        viz.plot_gaussian_ellipses(torch.zeros(3), torch.eye(3))
    fig, axes = viz.new_figure((6, 3), ncols=3)
    assert len(axes) == 3 and len(fig.axes) == 3
    for f in (f1, f2, f3, f4, fig):
        assert isinstance(f, matplotlib.figure.Figure) and f.get_facecolor()[3] == 1.0
    assert len(f3.axes[0].get_lines()) == 3  # one PDE curve per saved frame
    assert dict(matplotlib.rcParams) == before
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="1-D grid"):
        g2 = fl.make_grid((-1, -1), (1, 1), (4, 4))
        s2 = fl.solve_transformer_pde(fl.SoftmaxAttention(), torch.ones(4, 4, dtype=F64), g2, t1=0.1, n_save=1)
        viz.plot_density_1d(s2)


def test_explorer_static_html_is_self_contained_and_light(traj):
    pytest.importorskip("ipywidgets")
    import json
    import re

    calls = []

    def make(beta, method):
        calls.append((beta, method))
        return traj

    e = viz.explore(make, beta=[0.5, 1.0, 2.0], method=["euler", "rk4"])
    assert calls == [(0.5, "euler")]  # the static view is built only when displayed
    page = e.to_html()
    assert len(calls) == 6 and len(e.cache) == 6  # every combination once, shared with the widget
    assert e.to_html() is page  # cached
    assert len(page.encode()) <= viz.MAX_EXPLORER_BYTES
    assert page.startswith('<div class="flowlib-player flowlib-explorer"')
    # one control per parameter (numbers: a slider, strings: a drop-down), labelled for a reader (beta reads
    # "β (inverse temperature)"), plus the time slider and the play/pause and step buttons
    assert len(re.findall(r'<input type="range"[^>]*data-param="0"', page)) == 1
    assert len(re.findall(r'<select[^>]*data-param="1"', page)) == 1
    assert page.count('data-depth="1"') == 2  # the time slider and its label's output
    assert re.search(r"<label[^>]*>β \(inverse temperature\) = <output", page)
    assert re.search(r"<label[^>]*>method = <output", page) and re.search(r"<label[^>]*>time t = <output", page)
    for button in ("data-play", "data-first", "data-prev", "data-next", "data-last"):
        assert page.count(f'<button type="button" {button}="1"') == 1, button
    assert re.search(r'<img class="flowlib-frame flowlib-explorer-frame" alt="[^"]+"', page)
    # no external request: every image is embedded, no src/href points anywhere
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http://" not in page and "https://" not in page
    # frames: capped, evenly spaced, first and last depth of each combination
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page, re.S).group(1))
    assert set(data["frames"]) == {f"{i},{j}" for i in range(3) for j in range(2)}
    assert [p["label"] for p in data["params"]] == ["β (inverse temperature)", "method"]
    per = max(2, min(viz.widgets.MAX_DEPTH_FRAMES, viz.MAX_EXPLORER_FRAMES // 6))
    for frames in data["frames"].values():
        assert len(frames) == per
        assert frames[0][0] == 0 and frames[-1][0] == len(traj) - 1 == frames[-1][1]
        assert all(f[2].startswith("data:image/png;base64,") for f in frames)
        assert frames[-1][3].startswith(f"{float(traj.t[-1]):.3g} (step {len(traj) - 1} of")
    assert e.n_frames == 6 * per <= viz.MAX_EXPLORER_FRAMES
    assert page.count("data:image/png") == e.n_frames + 1  # every frame once, plus the initial picture
    # the notebook output offers the widget and the HTML: the website renders the latter
    bundle = e._repr_mimebundle_()
    assert bundle["text/html"] is page
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_explorer_budget_with_many_tokens():
    pytest.importorskip("ipywidgets")
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))

    def make(beta):
        return fl.simulate(fl.SoftmaxAttention(beta=beta), x0, t1=1.0, n_steps=100)

    e = viz.explore(make, beta=[0.5, 1.0, 2.0, 4.0])
    page = e.to_html()
    assert e.n_frames == 4 * min(viz.widgets.MAX_DEPTH_FRAMES, viz.MAX_EXPLORER_FRAMES // 4)
    assert len(page.encode()) <= viz.MAX_EXPLORER_BYTES
    with pytest.raises(ValueError, match="at least one parameter"):
        viz.explore(make)
    with pytest.raises(ValueError, match="view"):
        viz.explore(make, beta=[1.0], view="sideways")
    with pytest.raises(ValueError, match="offers no value"):
        viz.explore(make, beta=[])


def _frame_sizes(page: str) -> list[tuple[int, int]]:
    import base64
    import io
    import re

    from PIL import Image

    srcs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    return [Image.open(io.BytesIO(base64.b64decode(s))).size for s in srcs]


def test_players_are_crisp_labelled_and_leave_nothing_to_a_cdn(traj):
    """Frames are drawn FRAME_PX wide (2x the width the site shows them at), even when dpi asks for less."""
    pytest.importorskip("ipywidgets")
    anim = viz.animate_tokens(traj, max_frames=4, dpi=60, hint="Watch the tokens merge.")
    sizes = _frame_sizes(anim.html)
    assert anim.n_frames == 4 and len(sizes) == 4 + 1  # every frame, plus the opening picture
    assert all(w >= viz.FRAME_PX == 2 * viz.DISPLAY_PX for w, _ in sizes), sizes
    assert 'title="Play"' in anim.html and "Watch the tokens merge." in anim.html
    assert "font-awesome" not in anim.html and "https://" not in anim.html and "http://" not in anim.html
    e = viz.explore(lambda n_layers: traj, n_layers=[4, 8], labels={"n_layers": "depth L of the stack"})
    page = e.to_html()
    assert "depth L of the stack = " in page and all(w >= viz.FRAME_PX for w, _ in _frame_sizes(page))
    assert viz.human_label("n_layers") == "layers L" and viz.human_label("my_param") == "my param"
    with pytest.raises(TypeError):
        viz.human_label(3)
    with pytest.raises(ValueError, match="max_frames"):
        viz.animate_tokens(traj, max_frames=0)


def test_explorer_window_can_follow_the_cloud():
    pytest.importorskip("ipywidgets")
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1)) + 10.0  # far from the origin

    def make(beta):
        return fl.simulate(fl.SoftmaxAttention(beta=beta), x0, t1=0.5, n_steps=4)

    e = viz.explore(make, beta=[1.0], view="follow")
    assert e.view == "follow" and 'class="flowlib-player flowlib-explorer"' in e.to_html()
    from matplotlib.figure import Figure

    from flowlib.viz.widgets import _follow_limits

    ax = Figure().add_subplot()
    _follow_limits(ax, x0.numpy())
    lo, hi = ax.get_xlim()
    assert lo < float(x0[:, 0].min()) and hi > float(x0[:, 0].max()) and lo > 5.0  # centred on the cloud
