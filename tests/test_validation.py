"""The validation contract (DESIGN 4.4): one pytest.raises per rule, with informative messages."""

from __future__ import annotations

import pytest
import torch

import flowlib as fl

F64 = torch.float64


def x(n=4, d=3):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(0))


def test_tokens_need_two_dims():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., n, d\); got \(5,\)"):
        fl.SoftmaxAttention()(torch.zeros(5))


def test_tokens_must_be_tensors_of_floats():
    with pytest.raises(TypeError, match="torch.Tensor"):
        fl.SoftmaxAttention()([[1.0, 2.0]])
    with pytest.raises(TypeError, match="floating"):
        fl.SoftmaxAttention()(torch.zeros(3, 2, dtype=torch.int64))


def test_q_width_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"Q must have 3 columns .* got shape \(2, 5\)"):
        fl.SoftmaxAttention(Q=torch.zeros(2, 5))(x())


def test_q_k_rows_mismatch():
    with pytest.raises(ValueError, match=r"Q \(2, 3\) and K \(4, 3\)"):
        fl.SoftmaxAttention(Q=torch.zeros(2, 3), K=torch.zeros(4, 3))(x())


def test_v_must_be_square():
    with pytest.raises(ValueError, match="V must have 3 rows"):
        fl.SoftmaxAttention(V=torch.zeros(2, 3))(x())


def test_heads_partition():
    Q = torch.zeros(2, 1, 3)
    with pytest.raises(ValueError, match=r"H \* d_v must equal d; got H=2, d_v=2, d=3"):
        fl.MultiHeadAttention(Q=Q, K=Q, V=torch.zeros(2, 2, 3))(x())
    with pytest.raises(ValueError, match=r"shape \(H, rows, d\)"):
        fl.MultiHeadAttention(Q=torch.zeros(1, 3), K=Q, V=Q)


def test_mask_shape_and_dtype():
    with pytest.raises(ValueError, match=r"broadcastable to \(\.\.\., 4, 4\); got \(3, 3\)"):
        fl.SoftmaxAttention(mask=torch.ones(3, 3, dtype=torch.bool))(x())
    with pytest.raises(TypeError, match="torch.bool"):
        fl.SoftmaxAttention(mask=torch.ones(4, 4))


def test_non_finite_input_rejected_once_per_simulate():
    bad = x()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x0 contains NaN/inf"):
        fl.simulate(fl.SoftmaxAttention(), bad, t1=1.0, n_steps=2)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        fl.residual_stack(lambda y: y, bad, 3)


def test_step_arguments():
    with pytest.raises(ValueError, match="n_steps must be >= 1; got 0"):
        fl.simulate(fl.SoftmaxAttention(), x(), t1=1.0, n_steps=0)
    with pytest.raises(TypeError, match="n_steps must be an int"):
        fl.simulate(fl.SoftmaxAttention(), x(), t1=1.0, n_steps=2.5)
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        fl.simulate(fl.SoftmaxAttention(), x(), t1=1.0, n_steps=2, save_every=0)
    with pytest.raises(ValueError, match="method must be one of"):
        fl.simulate(fl.SoftmaxAttention(), x(), t1=1.0, n_steps=2, method="rk45")
    with pytest.raises(ValueError, match="t1 must be finite"):
        fl.simulate(fl.SoftmaxAttention(), x(), t1=float("inf"), n_steps=2)
    with pytest.raises(TypeError, match="field must be callable"):
        fl.simulate(3.0, x(), t1=1.0, n_steps=2)


def test_beta_must_be_finite():
    with pytest.raises(ValueError, match="beta must be finite"):
        fl.SoftmaxAttention(beta=float("nan"))
    with pytest.raises(TypeError, match="beta must be a real number"):
        fl.L2Attention(beta="2")
    with pytest.raises(ValueError, match="beta must be finite"):
        fl.MultiHeadAttention(
            Q=torch.zeros(1, 3, 3), K=torch.zeros(1, 3, 3), V=torch.zeros(1, 3, 3), beta=torch.tensor([float("inf")])
        )


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        fl.SoftmaxAttention(backend="keops2")
    with pytest.raises(ValueError, match="backend must be one of"):
        fl.softmax_average(x(), x(), x(), backend="cuda")


def test_sinkhorn_and_sigmoid_options():
    with pytest.raises(ValueError, match="n_half_steps must be >= 1"):
        fl.SinkhornAttention(n_half_steps=0)
    with pytest.raises(ValueError, match="last_step must be 'rows' or 'cols'"):
        fl.SinkhornAttention(last_step="both")
    with pytest.raises(ValueError, match="normalization must be"):
        fl.SigmoidAttention(normalization="softmax")


def test_off_sphere_is_rejected_on_entry_only():
    y = fl.unit_normalize(x())
    field = fl.SphereAttention()
    fl.simulate(field, y, t1=1.0, n_steps=4, method="rk4")  # stages may drift: no error
    with pytest.raises(ValueError, match="unit sphere"):
        field(2 * y)


def test_misc_helpers():
    with pytest.raises(ValueError, match="need n <= d"):
        fl.random_orthonormal(5, 3)
    with pytest.raises(ValueError, match="at least two errors"):
        fl.fit_order([1, 2], [1e-20, 1e-20])
    with pytest.raises(ValueError, match="delta must have the shape"):
        fl.perturbation_growth(lambda y: y, x(), torch.zeros(2, 2), t1=1.0, n_steps=1)
    with pytest.raises(ValueError, match="J must have shape"):
        fl.log_norm(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="m must be > 0"):
        fl.contraction_step_limit(-1.0, 2.0)
