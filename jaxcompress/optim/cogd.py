"""Cogradient descent (CoGD): the released correction rules and a bilinear alternating solver.

Zhuo, Zhang, Yang, Chen, Ye, Doermann, Guo, Ji, "Cogradient Descent for Bilinear Optimization",
CVPR 2020, arXiv 2006.09142. Problem (Eq. 1): min over (A, x) of
`G(A, x) = ||b - A x||^2 + lambda ||x||_1 + R(A)`, x the sparse factor.

One step is (1) an x-step (gradient step and soft threshold), (2) an A-step, (3) a correction
of A that may use both iterates of both factors. The corrections (`VARIANTS`):

* `none`: plain alternation (FFCSC, the paper's baseline).
* `matlab_heuristic`: the only concrete rule available, that of the official code
  (github.com/bczhangbczhang/CoGD, `CoGD-master.zip`, `CSC/backtracking_d.m` after each filter
  update of `CSC/admm_learn_conv2D_weighted.m`, `CSC/backtracking_btb.m` in
  `..._sparse.m`). Positions are ranked by the codes summed over images, in MATLAB's
  column-major order, and the top `alpha` fraction of the filter entries at those positions are
  pulled back to the previous filters (`pull_back`) or pushed along them (`residual_push`).
  The released loop runs over a uint8 counter, so its bound saturates at 255 and
  `len3 - i` saturates at 255: one entry (the 255th smallest) is updated up to 255 times.
  `saturate=False` runs the loop the code spells out instead (ranks 2, 3, ... from the top,
  each once). The position decoding uses `len2 = H*W + 1` (`released_decoding=True`); where it
  decodes a column past the grid the released code stops with an index error, here the entry
  is skipped; `released_decoding=False` uses the plain column-major unravel.
* `paper`: the projection-function rule of the paper, whose details are unconfirmed; it raises
  NotImplementedError.

The bilinear solver needs two gradients per step, the x-gradient at (A_t, x_t) and the
A-gradient at (A_t, x_{t+1}) (Gauss-Seidel alternation, as FFCSC), and the correction needs the
previous iterates: an optax GradientTransformation receives one gradient evaluated at one point,
so it can only express the simultaneous update. It is therefore a pair of step functions
(`x_step`, `a_step`) plus a scanned driver (`run_bilinear`) that returns the asynchrony
diagnostic (gradient norms of both factors per iteration).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

VARIANTS = ("none", "matlab_heuristic", "paper")
# The released loops count with uint8 (`for i = 1:(uint8(alpha*len3))`).
_UINT8_MAX = 255

# (d, d_old, z, z_old, residual, t, num_iters) -> corrected d; see `csc_correction`.
Correction = Callable[..., jax.Array]


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise ValueError(f"unknown CoGD variant {variant!r}; use one of {VARIANTS}.")
  if variant == "paper":
    raise NotImplementedError(
        "CoGD variant 'paper' is not implemented: the paper's projection function, the "
        "cogradient correction of A, the test that detects asynchronous convergence and its "
        "threshold, its step sizes and constants, and whether x is corrected too are unconfirmed "
        "(arXiv 2006.09142, method section). Use 'matlab_heuristic' (the released rule) or 'none'.")


def _matlab_round(x: jax.Array) -> jax.Array:
  """MATLAB's round / integer conversion of a non-negative value (halves away from zero)."""
  return jnp.floor(x + 0.5)


def _decode(m1: jax.Array, h: int, w: int, released: bool):
  """1-based MATLAB linear index into (H, W, K) -> (k, row, col, valid), all 0-based."""
  if released:
    len2 = h * w + 1
    k = (m1 - 1) // len2
    r = (m1 - 1) % len2
    col = r // h
    row = ((m1 % len2) - 1) % h  # floor mod == MATLAB mod for a positive divisor
    return k, row, jnp.minimum(col, w - 1), col < w
  m0 = m1 - 1
  return m0 // (h * w), m0 % h, (m0 % (h * w)) // h, jnp.ones_like(m0, bool)


def _released_loop(d, aux, z_sum, alpha, update, saturate: bool, released_decoding: bool):
  """Runs `for i = 1:n, d(pos(indb(len3 - i))) = update(...)` of the released corrections.

  Args:
    d: (K, H, W) filters in this package's layout (the MATLAB array is (H, W, K)).
    aux: tuple of (K, H, W) arrays `update` reads at the same position.
    z_sum: (K, H, W) ranking scores (codes summed over images).
    alpha: fraction of the `len3 = K*H*W` entries.
    update: `(d_val, *aux_vals) -> new d_val`, elementwise.
    saturate: uint8 loop counter as released.
    released_decoding: `len2 = H*W + 1` position decoding as released.

  Returns:
    The updated (K, H, W) filters.
  """
  kk, h, w = d.shape
  len3 = kk * h * w
  # MATLAB's reshape(z_sum, len3, 1) walks rows fastest, then columns, then filters.
  order = jnp.argsort(jnp.transpose(z_sum, (0, 2, 1)).reshape(-1), stable=True)
  if saturate:
    n_iter = jnp.clip(_matlab_round(alpha * len3), 0, _UINT8_MAX)

    def body(i, d):  # MATLAB i = i + 1 (uint8), so len3 - i saturates at 255
      rank = jnp.minimum(len3 - (i + 1), _UINT8_MAX)
      k, row, col, valid = _decode(order[rank - 1] + 1, h, w, released_decoding)
      cur = d[k, row, col]
      new = update(cur, *(a[k, row, col] for a in aux))
      return d.at[k, row, col].set(jnp.where((i < n_iter) & valid, new, cur))

    return jax.lax.fori_loop(0, _UINT8_MAX, body, d)
  n_iter = _matlab_round(alpha * len3)
  rank0 = jnp.arange(len3)
  # i = 1..n touches 1-based ranks len3 - i, i.e. 0-based ranks len3-1-n .. len3-2.
  chosen = (rank0 >= len3 - 1 - n_iter) & (rank0 <= len3 - 2)
  k, row, col, valid = _decode(order + 1, h, w, released_decoding)
  # Both decodings are injective on valid entries, so each entry is touched at most once and
  # the sequential loop equals one vectorised pass.
  mask = jnp.zeros(d.shape, bool).at[k, row, col].max(chosen & valid)
  return jnp.where(mask, update(d, *aux), d)


def matlab_pull_back(d: jax.Array, d_old: jax.Array, z: jax.Array, t, num_iters: int, *,
                     saturate: bool = True, released_decoding: bool = True) -> jax.Array:
  """Reconstruction rule of the released code (`CSC/backtracking_d.m`).

  `alpha = (T - t) / (2 T)`; for the entries ranked by `sum_n z` (as released, see module
  docstring) `d <- 0.01 d + 0.99 d_old`.

  Args:
    d: (K, H, W) filters after the filter update (full padded grid).
    d_old: (K, H, W) filters before the filter update.
    z: (N, K, H, W) codes.
    t: outer iteration, 1-based (Python number or 0-d array).
    num_iters: T, the number of outer iterations.
    saturate: uint8 loop counter as released.
    released_decoding: the released `len2 = H*W + 1` position decoding.

  Returns:
    The corrected (K, H, W) filters.
  """
  d, d_old, z = (jnp.asarray(v) for v in (d, d_old, z))
  alpha = (num_iters - jnp.asarray(t, d.dtype)) / (2 * num_iters)
  update = lambda dv, ov: dv * 0.01 + ov * 0.99  # noqa: E731
  return _released_loop(d, (d_old,), jnp.sum(z, 0), alpha, update, saturate, released_decoding)


def matlab_residual_push(d: jax.Array, d_old: jax.Array, z: jax.Array, z_old: jax.Array,
                         residual: jax.Array, t, num_iters: int, *, saturate: bool = True,
                         released_decoding: bool = True) -> jax.Array:
  """Inpainting rule of the released code (`CSC/backtracking_btb.m`).

  `alpha = (T - t) / (3 T)`, `c = 0.05 sum(residual)`; for each ranked entry
  `p = min(||z[:, e] - z_old[:, e]||_2 / |d[e] - d_old[e] + 1e-5|, 1)` and
  `d[e] <- d[e] + 0.1 c p d_old[e]`, p recomputed from the current d at every visit.

  Args:
    d: (K, H, W) filters after the filter update.
    d_old: (K, H, W) filters before it.
    z: (N, K, H, W) codes; z_old: the codes before the previous code update.
    residual: masked residual `mask * (crop(D z) - b)` (any shape; only its sum is used).
    t: outer iteration, 1-based; num_iters: T.
    saturate, released_decoding: as `matlab_pull_back`.

  Returns:
    The corrected (K, H, W) filters.
  """
  d, d_old, z, z_old = (jnp.asarray(v) for v in (d, d_old, z, z_old))
  alpha = (num_iters - jnp.asarray(t, d.dtype)) / (3 * num_iters)
  c = 0.05 * jnp.sum(residual).astype(d.dtype)
  dz = jnp.sqrt(jnp.sum((z - z_old) ** 2, 0))

  def update(dv, ov, nz):
    # fmin: MATLAB's min ignores the NaN of 0/0.
    p = jnp.fmin(nz / jnp.abs((dv - ov) + 1e-5), 1.0)
    return dv + ov * 0.1 * c * p

  return _released_loop(d, (d_old, dz), jnp.sum(z, 0), alpha, update, saturate,
                        released_decoding)


def csc_correction(variant: str = "matlab_heuristic", task: str = "reconstruction", *,
                   saturate: bool = True, released_decoding: bool = True) -> Correction:
  """The correction hook called after each filter update of the CSC solver.

  Args:
    variant: one of `VARIANTS`.
    task: "reconstruction" (`matlab_pull_back`) or "inpainting" (`matlab_residual_push`), the
      rule each released driver calls.
    saturate, released_decoding: sub-flags of `matlab_heuristic` (see module docstring).

  Returns:
    `fn(d, d_old, z, z_old, residual, t, num_iters) -> d`; the same function object for the same
    arguments, so a solver jitted with the hook as a static argument compiles once per hook.
  """
  return _csc_correction(variant, task, bool(saturate), bool(released_decoding))


@functools.lru_cache(maxsize=None)
def _csc_correction(variant: str, task: str, saturate: bool, released_decoding: bool
                    ) -> Correction:
  _check_variant(variant)
  if task not in ("reconstruction", "inpainting"):
    raise ValueError(f"unknown CSC task {task!r}; use 'reconstruction' or 'inpainting'.")
  if variant == "none":
    return lambda d, d_old, z, z_old, residual, t, num_iters: d
  flags = dict(saturate=saturate, released_decoding=released_decoding)
  if task == "reconstruction":
    return lambda d, d_old, z, z_old, residual, t, num_iters: matlab_pull_back(
        d, d_old, z, t, num_iters, **flags)
  return lambda d, d_old, z, z_old, residual, t, num_iters: matlab_residual_push(
      d, d_old, z, z_old, residual, t, num_iters, **flags)


# ------------------------------------------------------------------------- generic bilinear form
def soft_threshold(u: jax.Array, theta) -> jax.Array:
  """Proximal map of `theta ||.||_1`: `max(0, 1 - theta / |u|) u`, the form FFCSC uses."""
  a = jnp.abs(u)
  return jnp.where(a > theta, (1 - theta / jnp.where(a > 0, a, 1)) * u, jnp.zeros_like(u))


def x_step(smooth_loss: Callable, a: jax.Array, x: jax.Array, lam, lr):
  """Proximal gradient step on the sparse factor: `x <- S_{lr lam}(x - lr grad_x f(a, x))`.

  Args:
    smooth_loss: `f(a, x)`, the smooth part of Eq. 1 (data term plus R(A)).
    a, x: current factors; lam: weight of `||x||_1`; lr: step size.

  Returns:
    (new x, norm of the gradient mapping `(x - x_new) / lr`).
  """
  g = jax.grad(smooth_loss, argnums=1)(a, x)
  x_new = soft_threshold(x - lr * g, lr * lam)
  return x_new, jnp.linalg.norm((x - x_new) / lr)


def a_step(smooth_loss: Callable, a: jax.Array, x: jax.Array, lr):
  """Gradient step on the dense factor at the new x: `a <- a - lr grad_a f(a, x)`.

  Returns:
    (new a, norm of the gradient).
  """
  g = jax.grad(smooth_loss, argnums=0)(a, x)
  return a - lr * g, jnp.linalg.norm(g)


def pull_back_columns(a: jax.Array, a_old: jax.Array, x: jax.Array, t, num_iters: int, *,
                      saturate: bool = True) -> jax.Array:
  """`matlab_pull_back` transposed to a matrix factor: x's entries rank A's columns.

  In A x, entry j of x multiplies column j of A, the counterpart of a code position and the
  filter entry at that position in the released rule. Scores are x summed over samples (the
  released rule sums the codes over images); the top `alpha = (T - t) / (2 T)` columns, ranked
  and counted as released, get `a <- 0.01 a + 0.99 a_old` once per visit.

  Args:
    a, a_old: (M, N) new and previous dense factor; x: (N,) or (N, S) sparse factor.
    t: iteration, 1-based; num_iters: T; saturate: uint8 loop counter as released.

  Returns:
    The corrected (M, N) factor.
  """
  a, a_old, x = (jnp.asarray(v) for v in (a, a_old, x))
  n = a.shape[1]
  scores = jnp.sum(x.reshape(n, -1), 1)
  order = jnp.argsort(scores, stable=True)
  alpha = (num_iters - jnp.asarray(t, a.dtype)) / (2 * num_iters)
  i = jnp.arange(1, max(n, _UINT8_MAX + 1))
  if saturate:
    n_iter = jnp.clip(_matlab_round(alpha * n), 0, _UINT8_MAX)
    rank = jnp.minimum(n - i, _UINT8_MAX)
  else:
    n_iter = _matlab_round(alpha * n)
    rank = n - i
  hit = (i <= n_iter) & (rank >= 1)
  counts = jnp.zeros((n,), a.dtype).at[order[jnp.clip(rank - 1, 0, n - 1)]].add(
      hit.astype(a.dtype))
  # k visits of `0.01 a + 0.99 a_old` leave a_old + 0.01**k (a - a_old).
  return a_old + (0.01 ** counts)[None, :] * (a - a_old)


class BilinearTrace(NamedTuple):
  """Per-iteration diagnostics of `run_bilinear` (arrays of length num_steps)."""
  objective: jax.Array
  grad_norm_a: jax.Array
  grad_norm_x: jax.Array


def bilinear_objective(a: jax.Array, x: jax.Array, b: jax.Array, lam, mu) -> jax.Array:
  """Eq. 1 with `R(A) = mu ||A||_F^2`: `||b - A x||^2 + lam ||x||_1 + mu ||A||_F^2`."""
  return jnp.sum((b - a @ x) ** 2) + lam * jnp.sum(jnp.abs(x)) + mu * jnp.sum(a * a)


def run_bilinear(a0: jax.Array, x0: jax.Array, b: jax.Array, *, lam, mu, num_steps: int,
                 variant: str = "none", saturate: bool = True, step_scale=1.0):
  """Alternating proximal gradient on Eq. 1 with an optional CoGD correction of A.

  Step sizes are `step_scale / L` with L the Lipschitz constant of each block's gradient
  (`2 ||A||_2^2` for x, `2 ||x||_2^2 + 2 mu` for A), recomputed every step.

  Args:
    a0: (M, N) initial dense factor; x0: (N,) or (N, S) initial sparse factor; b: (M,) or
      (M, S) observations.
    lam, mu: weights of `||x||_1` and `||A||_F^2`.
    num_steps: iterations T (static).
    variant: "none" or "matlab_heuristic" (`pull_back_columns`); "paper" raises.
    saturate: uint8 sub-flag of the heuristic.
    step_scale: fraction of the 1/L step.

  Returns:
    (a, x, BilinearTrace) with the objective after each step and the gradient norms of the
    two factors at each step (x: norm of the proximal gradient mapping).
  """
  _check_variant(variant)
  if a0.ndim != 2 or x0.shape[0] != a0.shape[1] or b.shape[0] != a0.shape[0]:
    raise ValueError(f"run_bilinear expects a0 (M, N), x0 (N, ...), b (M, ...); got {a0.shape}, "
                     f"{x0.shape}, {b.shape}. Match the inner dimension of A x and b's rows.")
  b = jax.lax.stop_gradient(b)
  smooth = lambda a, x: jnp.sum((b - a @ x) ** 2) + mu * jnp.sum(a * a)  # noqa: E731

  def step(carry, t):
    a, x = carry
    lr_x = step_scale / (2 * jnp.linalg.norm(a, 2) ** 2)
    x_new, gx = x_step(smooth, a, x, lam, lr_x)
    xm = x_new.reshape(x_new.shape[0], -1)
    lr_a = step_scale / (2 * jnp.linalg.norm(xm, 2) ** 2 + 2 * mu)
    a_new, ga = a_step(smooth, a, x_new, lr_a)
    if variant == "matlab_heuristic":
      a_new = pull_back_columns(a_new, a, x_new, t, num_steps, saturate=saturate)
    obj = bilinear_objective(a_new, x_new, b, lam, mu)
    return (a_new, x_new), (obj, ga, gx)

  ts = jnp.arange(1, num_steps + 1, dtype=a0.dtype)
  (a, x), (obj, ga, gx) = jax.lax.scan(step, (a0, x0), ts)
  return a, x, BilinearTrace(obj, ga, gx)


def synthetic_bilinear_problem(key: jax.Array, m: int = 64, n: int = 128, samples: int = 256,
                               density: float = 0.05, noise: float = 0.01,
                               dtype=jnp.float32):
  """`b = A* x* + noise` with A* (m, n) Gaussian / sqrt(m) and x* (n, samples) sparse.

  Returns:
    (b, a_star, x_star).
  """
  ka, ks, kv, kn = jax.random.split(key, 4)
  a_star = jax.random.normal(ka, (m, n), dtype) / jnp.sqrt(m).astype(dtype)
  support = jax.random.uniform(ks, (n, samples)) < density
  x_star = jnp.where(support, jax.random.normal(kv, (n, samples), dtype), 0)
  b = a_star @ x_star + noise * jax.random.normal(kn, (m, samples), dtype)
  return b, a_star, x_star
