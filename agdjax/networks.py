"""Actor, critic, reward model and the residual-MLP denoiser (flax.linen, pure `apply`).

Sources: actor/critic — PolyGRAD reference (2x256 MLP, LayerNorm, ELU; policy
Normal(tanh(MLP(s)), exp(b) + 0.1)); denoiser — `ResidualMLPDenoiser` of SynthER as used by
PolyGRAD (DESIGN §1 'Denoiser').
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_f32(x, w, dtype):
    """x [..., in] @ w [in, out] with `dtype` operands and float32 sums -> float32 [..., out]."""
    return jax.lax.dot_general(x.astype(dtype), w.astype(dtype), (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _matmul_f32_fwd(x, w, dtype):
    return _matmul_f32(x, w, dtype), (x, w)


def _matmul_f32_bwd(dtype, res, g):
    """Both gradient matmuls with `dtype` operands and f32 sums too (left to autodiff, the f32
    cotangent would promote them to f32 matmuls); the gradients come back in the primal dtypes,
    not rounded to `dtype`."""
    x, w = res
    xl, wl, gl = x.astype(dtype), w.astype(dtype), g.astype(dtype)
    lead = tuple(range(x.ndim - 1))
    dx = jax.lax.dot_general(gl, wl, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    dw = jax.lax.dot_general(xl, gl, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul_f32.defvjp(_matmul_f32_fwd, _matmul_f32_bwd)


def dot_accumulate_f32(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *,
                       dtype=jnp.bfloat16):
    """nn.Dense's `x [..., in] @ kernel [in, out]` with `dtype` operands (cast here), summed and
    returned in float32, forward and backward: bfloat16 operands then run on the CPU's bf16
    dot-product units (AVX512-BF16 / AMX) or GPU tensor cores with fp32 sums (a bf16 result
    would round every output), while the parameters, the bias and every gradient stay float32.
    Reverse-mode only (a custom VJP: jax.jvp raises). Raises ValueError for another contraction."""
    del precision, preferred_element_type
    if tuple(map(tuple, dimension_numbers[0])) != ((lhs.ndim - 1,), (0,)) or any(dimension_numbers[1]):
        raise ValueError(f"dot_accumulate_f32 contracts x's last axis with w's first, got {dimension_numbers}")
    return _matmul_f32(lhs, rhs, dtype)


def low_precision_dense(n: int, dtype) -> nn.Dense:
    """nn.Dense(n) (float32 params and bias) whose matmul takes `dtype` operands with float32
    sums (`dot_accumulate_f32`); plain nn.Dense for float32."""
    if jnp.dtype(dtype) == jnp.float32:
        return nn.Dense(n)
    return nn.Dense(n, dot_general=functools.partial(dot_accumulate_f32, dtype=dtype))


class MLP(nn.Module):
    """Dense -> LayerNorm -> ELU for each hidden layer, then a Dense output. `dtype`: the
    matmul operand dtype (`low_precision_dense`); LayerNorm, ELU and the output stay float32,
    and the parameters are the same whatever the dtype."""
    hidden: Sequence[int]
    out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.elu(nn.LayerNorm()(low_precision_dense(h, self.dtype)(x)))
        return low_precision_dense(self.out, self.dtype)(x).astype(jnp.float32)


class Actor(nn.Module):
    """Gaussian policy on raw observations: returns (mean [.., act_dim], std [.., act_dim]).
    `dtype`: matmul operands (see MLP); the guide's copy uses the denoiser's."""
    act_dim: int
    hidden: int = 256
    init_std: float = 1.0
    min_std: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs):
        mean = jnp.tanh(MLP((self.hidden, self.hidden), self.act_dim, self.dtype)(obs))
        b0 = math.log(self.init_std - self.min_std)
        b = self.param("log_std", nn.initializers.constant(b0), (self.act_dim,))
        std = jnp.exp(b) + self.min_std
        return mean, jnp.broadcast_to(std, mean.shape)


class Critic(nn.Module):
    """State value V(s) on raw observations: obs [.., obs_dim] -> [..]. `dtype`: matmul
    operands (see MLP)."""
    hidden: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs):
        return MLP((self.hidden, self.hidden), 1, self.dtype)(obs)[..., 0]


class RewardModel(nn.Module):
    """r_phi(s, a) on raw obs/actions, for the `reward` guide: -> [..]. `dtype`: matmul
    operands (see MLP)."""
    hidden: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs, action):
        return MLP((self.hidden, self.hidden), 1, self.dtype)(jnp.concatenate([obs, action], -1))[..., 0]


def policy_dist(mean, std) -> distrax.Distribution:
    """Diagonal Gaussian over actions (log_prob sums over the action dimension)."""
    return distrax.MultivariateNormalDiag(mean, std)


class RandomFourierTime(nn.Module):
    """Random (fixed) Fourier features of the diffusion step t: [B] -> [B, 2*half + 1]."""
    dim: int = 16

    @nn.compact
    def __call__(self, t):
        w = self.param("w", nn.initializers.normal(1.0), (self.dim // 2,))
        w = jax.lax.stop_gradient(w)  # random, not learned
        t = t.astype(jnp.float32)[..., None]
        f = t * w * 2 * math.pi
        return jnp.concatenate([t, jnp.sin(f), jnp.cos(f)], -1)


class ResidualMLPDenoiser(nn.Module):
    """Predicts the clean trajectory x0 from a noisy one.

    Inputs: x_t [B, H, obs_dim+2], scaled actions [B, H, act_dim] (sqrt(alpha_bar_t) * a),
    t int [B]. Output x0_hat [B, H, obs_dim+2]. `dtype` is the matmul operand dtype; params,
    matmul accumulation and the output stay float32 (`dot_accumulate_f32`).
    """
    hidden: int = 1024
    n_blocks: int = 6
    time_dim: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_t, actions, t):
        b, h, d = x_t.shape
        inp = jnp.concatenate([x_t.reshape(b, -1), actions.reshape(b, -1)], -1)
        embed = max(inp.shape[-1], 128)
        dense = lambda n: low_precision_dense(n, self.dtype)
        t_emb = RandomFourierTime(self.time_dim)(t)
        t_emb = dense(embed)(nn.silu(dense(embed)(t_emb)))
        z = dense(embed)(inp) + t_emb
        z = dense(self.hidden)(z)
        for _ in range(self.n_blocks):  # residual blocks h + Linear(ReLU(LayerNorm(h)))
            z = z + dense(self.hidden)(nn.relu(nn.LayerNorm(dtype=self.dtype)(z)))
        z = dense(h * d)(nn.relu(nn.LayerNorm(dtype=self.dtype)(z)))
        return z.astype(jnp.float32).reshape(b, h, d)
