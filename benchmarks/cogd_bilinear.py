"""CoGD's synthetic bilinear check: final objectives with and without the correction, per seed.

Eq. 1 of Zhuo, Zhang et al. (CVPR 2020, arXiv 2006.09142) with R(A) = mu ||A||_F^2 on
`optim.cogd.synthetic_bilinear_problem` (A* 64 x 128 Gaussian, x* 5 % non-zero over 256 samples,
noise 0.01), solved by `optim.cogd.run_bilinear` (alternating proximal gradient at 1/L steps)
from the same start for every variant: `none` (plain alternation), `matlab_heuristic` (the
released correction with its uint8 saturation) and `matlab_heuristic` without the saturation.
Prints the final objective of each per seed, the relative gap to `none` and its spread, and the
mean gradient norms of the two factors over the first and last tenth of the iterations (the
asynchrony diagnostic of the paper's Fig. 1).

Usage:
  python benchmarks/cogd_bilinear.py [--seeds 5] [--steps 200] [--lam 0.1] [--mu 0.01]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.optim import cogd

VARIANTS = (("none", True), ("matlab_heuristic", True), ("matlab_heuristic", False))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--lam", type=float, default=0.1)
  parser.add_argument("--mu", type=float, default=0.01)
  args = parser.parse_args(argv)
  labels = [v if s else f"{v} (no uint8 saturation)" for v, s in VARIANTS]
  finals = {label: [] for label in labels}
  norms = {label: [] for label in labels}
  with jax.enable_x64(True):
    run = jax.jit(lambda a0, x0, b, variant, saturate: cogd.run_bilinear(
        a0, x0, b, lam=args.lam, mu=args.mu, num_steps=args.steps, variant=variant,
        saturate=saturate), static_argnums=(3, 4))
    for seed in range(args.seeds):
      b, a_star, x_star = cogd.synthetic_bilinear_problem(jax.random.PRNGKey(seed),
                                                          dtype=jnp.float64)
      a0 = jax.random.normal(jax.random.PRNGKey(100 + seed), a_star.shape, jnp.float64) / 8
      x0 = jnp.zeros_like(x_star)
      for label, (variant, saturate) in zip(labels, VARIANTS):
        trace = run(a0, x0, b, variant, saturate)[2]
        finals[label].append(float(trace.objective[-1]))
        tenth = max(args.steps // 10, 1)
        norms[label].append([float(np.mean(g[:tenth])) for g in (trace.grad_norm_a,
                                                                    trace.grad_norm_x)] +
                            [float(np.mean(g[-tenth:])) for g in (trace.grad_norm_a,
                                                                     trace.grad_norm_x)])
  print(f"synthetic bilinear problem, {args.seeds} seeds, {args.steps} iterations, lambda "
        f"{args.lam}, mu {args.mu}, float64; jax {jax.__version__}")
  print(f"{'variant':42s} {'final objective per seed':>40s}")
  for label in labels:
    print(f"{label:42s} " + " ".join(f"{v:9.4f}" for v in finals[label]))
  base = np.asarray(finals["none"])
  for label in labels[1:]:
    gap = (np.asarray(finals[label]) - base) / base
    print(f"relative gap {label} vs none: mean {gap.mean():+.5f}, min {gap.min():+.5f}, max "
          f"{gap.max():+.5f}; lower on {int((gap < 0).sum())} of {len(gap)} seeds")
  print("mean gradient norms, first / last tenth of the iterations (A, x), mean over seeds:")
  for label in labels:
    cols = np.asarray(norms[label]).mean(0)
    print(f"{label:42s} A {cols[0]:.4f} -> {cols[2]:.4f}   x {cols[1]:.4f} -> {cols[3]:.4f}")


if __name__ == "__main__":
  main()
