"""Fields as torch modules: parameters, devices, state dicts, gradients through every backend, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowlib as fl
from flowlib.fields.reductions import softmax_average

F64 = torch.float64


def _p(*shape, gen, scale=0.5):
    return nn.Parameter(scale * torch.randn(*shape, generator=gen, dtype=F64))


def _learnable(name: str, d: int, gen: torch.Generator, backend: str = "auto", chunk_size: int | None = None):
    """A field of each kind with every matrix (and beta) an nn.Parameter."""
    beta = nn.Parameter(torch.tensor(0.7, dtype=F64))
    kw = dict(backend=backend, chunk_size=chunk_size)
    if name == "softmax":
        return fl.SoftmaxAttention(Q=_p(d, d, gen=gen), K=_p(d, d, gen=gen), V=_p(d, d, gen=gen), beta=beta, **kw)
    if name == "l2":
        return fl.L2Attention(Q=_p(d, d, gen=gen), K=_p(d, d, gen=gen), V=_p(d, d, gen=gen), beta=beta, **kw)
    if name == "sinkhorn":
        return fl.SinkhornAttention(
            Q=_p(d, d, gen=gen), K=_p(d, d, gen=gen), V=_p(d, d, gen=gen), beta=beta, n_half_steps=4, **kw
        )
    if name == "sigmoid":
        kw["backend"] = "dense" if backend == "sdpa" else backend
        bias = nn.Parameter(torch.tensor(-0.3, dtype=F64))
        return fl.SigmoidAttention(
            Q=_p(d, d, gen=gen), K=_p(d, d, gen=gen), V=_p(d, d, gen=gen), beta=beta, bias=bias, **kw
        )
    if name == "multihead":
        return fl.MultiHeadAttention(
            Q=_p(2, 2, d, gen=gen),
            K=_p(2, 2, d, gen=gen),
            V=_p(2, d, d, gen=gen),
            W=_p(2, d, d, gen=gen),
            beta=nn.Parameter(torch.tensor([0.7, 1.1], dtype=F64)),
            **kw,
        )
    if name == "sphere":
        return fl.SphereAttention(Q=_p(d, d, gen=gen), K=_p(d, d, gen=gen), V=_p(d, d, gen=gen), beta=beta, **kw)
    raise KeyError(name)


NAMES = ["softmax", "l2", "sinkhorn", "sigmoid", "multihead", "sphere"]


# ----------------------------------------------------------------------------- module behaviour
@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_registered_and_state_dict_round_trips(name, gen):
    field = _learnable(name, 3, gen)
    names = {n for n, _ in field.named_parameters()}
    assert {"Q", "K", "V", "beta"} <= names
    state = field.state_dict()
    clone = _learnable(name, 3, torch.Generator().manual_seed(99))
    assert not torch.equal(clone.Q, field.Q)
    clone.load_state_dict(state)
    x = fl.uniform_sphere(5, 3, generator=gen, dtype=F64)
    assert torch.equal(clone(x), field(x))


def test_plain_tensors_are_buffers_and_move_with_to(gen):
    Q = torch.randn(3, 3, generator=gen, dtype=F64)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    field = fl.SoftmaxAttention(Q=Q, mask=mask)
    assert list(field.parameters()) == []
    assert {n for n, _ in field.named_buffers()} == {"Q", "mask", "beta"}  # beta: always a key (0.3)
    f32 = field.to(torch.float32)
    assert f32.Q.dtype == torch.float32 and f32.mask.dtype == torch.bool  # masks keep their dtype
    x = torch.randn(4, 3, generator=gen)
    assert f32(x).dtype == torch.float32


def test_replace_and_keyword_only(gen):
    field = fl.SoftmaxAttention(beta=2.0, causal=True)
    other = field.replace(backend="dense")
    assert other.backend == "dense" and other.beta == 2.0 and other.causal
    with pytest.raises(TypeError):
        fl.SoftmaxAttention(torch.eye(2))  # keyword-only
    with pytest.raises(TypeError, match="no argument"):
        field.replace(temperature=1.0)


def test_tensor_beta_gets_its_gradient_and_matches_float_beta(gen):
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    beta = torch.tensor(1.3, dtype=F64, requires_grad=True)
    out = fl.SoftmaxAttention(beta=beta)(x)
    assert torch.allclose(out, fl.SoftmaxAttention(beta=1.3)(x), atol=1e-14)
    out.pow(2).sum().backward()
    # d/dbeta by central differences with float betas
    eps = 1e-6
    fd = (fl.SoftmaxAttention(beta=1.3 + eps)(x).pow(2).sum() - fl.SoftmaxAttention(beta=1.3 - eps)(x).pow(2).sum()) / (
        2 * eps
    )
    assert beta.grad is not None and abs(float(beta.grad) - float(fd)) < 1e-7


def test_a_plain_module_is_called_as_f_of_x():
    class Drift(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0, dtype=F64))

        def forward(self, x):  # no t: simulate must not pass one
            return self.w * torch.ones_like(x)

    x0 = torch.zeros(1, 1, dtype=F64)
    traj = fl.simulate(Drift(), x0, t1=1.0, n_steps=4)
    assert traj.final.item() == pytest.approx(2.0, abs=1e-14)

    def scaled(x, scale=3.0):  # a keyword argument must not receive t
        return scale * torch.ones_like(x)

    assert float(fl.simulate(scaled, x0, t1=1.0, n_steps=5).final) == pytest.approx(3.0, abs=1e-14)


def test_undeclared_time_dependence_names_the_fix():
    with pytest.raises(TypeError, match="TimeDependent"):
        fl.simulate(lambda x, t: x * t, torch.zeros(1, 1, dtype=F64), t1=1.0, n_steps=2)


def test_time_dependent_module_gets_parameters_and_time():
    class Ramp(nn.Module):
        time_dependent = True

        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, x, t):
            return self.a * t * torch.ones_like(x)

    ramp = Ramp()
    traj = fl.simulate(ramp, torch.zeros(1, 1, dtype=F64), t1=2.0, n_steps=8, method="heun")
    assert traj.final.item() == pytest.approx(2.0, abs=1e-12)  # int_0^2 t dt, exact for Heun
    traj.final.sum().backward()
    assert float(ramp.a.grad) == pytest.approx(2.0, abs=1e-12)
    wrapped = fl.TimeDependent(ramp)
    assert [n for n, _ in wrapped.named_parameters()] == ["fn.a"]


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_gradcheck_softmax_average_in_every_input(backend, gen):
    n, m, e, f = 5, 7, 3, 2
    q = torch.randn(n, e, generator=gen, dtype=F64, requires_grad=True)
    k = torch.randn(m, e, generator=gen, dtype=F64, requires_grad=True)
    v = torch.randn(m, f, generator=gen, dtype=F64, requires_grad=True)
    beta = torch.tensor(0.8, dtype=F64, requires_grad=True)
    inputs = (q, k, v, beta)
    if backend != "sdpa":  # SDPA has no derivative with respect to a float attention bias on every kernel
        bias = torch.randn(1, m, generator=gen, dtype=F64, requires_grad=True)
        inputs += (bias,)

    def fn(q, k, v, beta, bias=None):
        return softmax_average(q, k, v, beta=beta, bias=bias, backend=backend, chunk_size=2)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_fields_in_x_and_parameters(name, gen):
    field = _learnable(name, 2, gen, backend="dense")
    x = fl.uniform_sphere(4, 2, generator=gen, dtype=F64).requires_grad_(True)
    params = list(field.parameters())

    def fn(x, *ps):
        with torch.no_grad():
            for p, new in zip(params, ps):
                p.copy_(new)
        return torch.func.functional_call(field, dict(zip([n for n, _ in field.named_parameters()], ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *[p.detach().clone().requires_grad_(True) for p in params]))


FAST = [(n, b) for n in NAMES for b in ("chunked", "sdpa") if (n, b) != ("sigmoid", "sdpa")]


@pytest.mark.parametrize(("name", "backend"), FAST)
def test_fast_backends_give_the_dense_gradients_with_several_blocks(name, backend, gen):
    x = fl.uniform_sphere(40, 3, generator=gen, dtype=F64)
    grads = {}
    for b in ("dense", backend):
        field = _learnable(name, 3, torch.Generator().manual_seed(7), backend=b, chunk_size=7)
        xx = x.clone().requires_grad_(True)
        field(xx).pow(2).sum().backward()
        grads[b] = [xx.grad] + [p.grad for p in field.parameters()]
    for gd, gf in zip(grads["dense"], grads[backend]):
        assert gf is not None and float((gd - gf).abs().max()) < 1e-10


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "sinkhorn"])
def test_value_only_gradient_through_several_blocks(name, gen):
    """Only V (or sigmoid's bias) needs a gradient, the tokens do not: the chunked path used to reuse one
    scratch buffer for every block, which autograd had saved, and backward raised "modified by an
    inplace operation" as soon as there was more than one block."""
    x = torch.randn(40, 3, generator=gen, dtype=F64)
    grads = {}
    for backend in ("dense", "chunked"):
        V = nn.Parameter(torch.eye(3, dtype=F64))
        kw = dict(V=V, beta=0.5, backend=backend, chunk_size=7)
        if name == "softmax":
            field = fl.SoftmaxAttention(**kw)
        elif name == "sinkhorn":
            field = fl.SinkhornAttention(n_half_steps=3, **kw)
        else:
            field = fl.SigmoidAttention(bias=nn.Parameter(torch.tensor(-0.2, dtype=F64)), **kw)
        field(x).pow(2).sum().backward()
        grads[backend] = [p.grad for p in field.parameters()]
    for gd, gc in zip(grads["dense"], grads["chunked"]):
        assert float((gd - gc).abs().max()) < 1e-12


# ----------------------------------------------------------------------------- training
class TwoLayerNet(nn.Module):
    """Two residual attention layers with learnable Q, K, V each: x -> x + h A_1(x) -> ... (h = 1/2)."""

    def __init__(self, d: int, gen: torch.Generator, backend: str):
        super().__init__()
        self.layers = nn.ModuleList(
            fl.SoftmaxAttention(
                Q=_p(d, d, gen=gen, scale=0.3),
                K=_p(d, d, gen=gen, scale=0.3),
                V=_p(d, d, gen=gen, scale=0.3),
                backend=backend,
                chunk_size=5,
            )
            for _ in range(2)
        )

    def forward(self, x):
        for layer in self.layers:
            x = x + 0.5 * layer(x)
        return x


def _target(x: torch.Tensor) -> torch.Tensor:
    """A synthetic target with structure: every token moves halfway to the sequence's mean, then rotates."""
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=x.dtype)
    return (0.5 * x + 0.5 * x.mean(dim=-2, keepdim=True)) @ R.mT


def test_a_two_layer_attention_network_trains():
    gen = torch.Generator().manual_seed(0)
    net = TwoLayerNet(3, gen, backend="auto")
    x = torch.randn(64, 12, 3, generator=gen, dtype=F64)  # 64 sequences of 12 tokens
    y = _target(x)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])  # (its speed is a benchmark's business)


def test_training_gradients_agree_across_backends():
    x = torch.randn(4, 12, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = _target(x)
    grads = {}
    for backend in ("dense", "chunked", "sdpa"):
        net = TwoLayerNet(3, torch.Generator().manual_seed(0), backend=backend)
        (net(x) - y).pow(2).mean().backward()
        grads[backend] = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert float((grads["chunked"] - grads["dense"]).abs().max()) < 1e-10
    assert float((grads["sdpa"] - grads["dense"]).abs().max()) < 1e-10


# ----------------------------------------------------------------------------- methods that replaced type tables
def test_mean_field_velocity_is_a_method_of_each_field(gen):
    x = torch.randn(6, 2, generator=gen, dtype=F64)
    for field in (fl.SoftmaxAttention(beta=0.9), fl.L2Attention(beta=0.4), fl.SigmoidAttention(beta=0.5)):
        # the empirical measure of the tokens themselves gives the field's own velocity
        assert torch.allclose(field.mean_field_velocity(x, x), field(x), atol=1e-13)
        # duplicating every point with half the mass changes nothing
        w = torch.full((12,), 0.5, dtype=F64)
        assert torch.allclose(field.mean_field_velocity(x, torch.cat([x, x]), w), field(x), atol=1e-13)
    s = fl.unit_normalize(x)
    for normalized in (True, False):
        sphere = fl.SphereAttention(beta=2.0, normalized=normalized)
        assert torch.allclose(sphere.mean_field_velocity(s, s), sphere(s), atol=1e-13)
    with pytest.raises(TypeError, match="no mean-field velocity"):
        fl.SinkhornAttention().mean_field_velocity(x, x)


def test_a_new_field_is_one_class(gen):
    """A user's field only implements velocity/weights and (optionally) its closure: flowlib.gaussian uses it."""

    class HalfSoftmax(fl.AttentionField):
        def velocity(self, x):
            return 0.5 * fl.SoftmaxAttention(beta=self.beta)(x)

        def weights(self, x):
            return fl.SoftmaxAttention(beta=self.beta).weights(x)

        def gaussian_closure(self):
            return "softmax", {"Q": None, "K": None, "V": 0.5 * torch.eye(2, dtype=F64), "beta": self.beta}

    mean, cov = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    b, J = fl.gaussian.affine_velocity(HalfSoftmax(beta=1.0), mean, cov)
    assert torch.allclose(J, 0.5 * torch.eye(2, dtype=F64))
    with pytest.raises(TypeError, match="no Gaussian closure for SphereAttention"):
        fl.gaussian.affine_velocity(fl.SphereAttention(), mean, cov)
