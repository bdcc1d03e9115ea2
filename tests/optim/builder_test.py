"""optim.builder: schedules against torch lr_schedulers / hand formulas, optimizers and global-norm
clipping against torch.optim + torch.nn.utils.clip_grad_norm_, registries and config errors."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from jaxcompress.errors import ConfigError
from jaxcompress.optim import builder


def _cfg(**kw) -> ml_collections.ConfigDict:
  base = dict(name="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.0,
              schedule="constant")
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _lrs(schedule, n):
  fn = jax.jit(schedule)
  return np.array([float(fn(jnp.int32(i))) for i in range(n)])


def _torch_lrs(make_scheduler, n, per=1):
  """torch's learning rate for steps 0..n-1; the scheduler is stepped every `per` steps."""
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([p], lr=0.1)
  sched = make_scheduler(opt)
  out = []
  for i in range(n):
    out.append(opt.param_groups[0]["lr"])
    opt.step()
    if (i + 1) % per == 0:
      sched.step()
  return np.array(out)


# ---------------------------------------------------------------------------------- schedules
def test_existing_schedules_keep_their_formulas():
  total, spe = 40, 4
  t = np.arange(total + 5)
  np.testing.assert_allclose(_lrs(builder.make_schedule(_cfg(), total, spe), len(t)), 0.1,
                             rtol=1e-6)
  cos = 0.5 * 0.1 * (1 + np.cos(np.pi * np.minimum(t, total) / total))
  np.testing.assert_allclose(_lrs(builder.make_schedule(_cfg(schedule="cosine"), total, spe),
                                  len(t)), cos, rtol=1e-5, atol=1e-8)
  # warm-up of 2 epochs (8 steps) from 0, then cosine over the remaining 32 steps.
  w = 8
  want = np.where(t < w, 0.1 * t / w,
                  0.5 * 0.1 * (1 + np.cos(np.pi * np.clip(t - w, 0, total - w) / (total - w))))
  for kind in ("cosine", "warmup_cosine"):
    got = _lrs(builder.make_schedule(_cfg(schedule=kind, warmup_epochs=2.0), total, spe), len(t))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
  # StepLR(step_size=3 epochs, gamma=0.5) per epoch, here per step.
  got = _lrs(builder.make_schedule(_cfg(schedule="step", decay_epochs=3, decay_factor=0.5),
                                   total, spe), len(t))
  torch_lr = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), len(t), per=spe)
  np.testing.assert_allclose(got, torch_lr, rtol=1e-6)


def test_linear_matches_torch_linear_lr_and_warmup_formula():
  total = 30
  got = _lrs(builder.make_schedule(_cfg(schedule="linear", end_learning_rate=0.01), total, 5),
             total + 5)
  torch_lr = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(
      o, start_factor=1.0, end_factor=0.1, total_iters=total), total + 5)
  np.testing.assert_allclose(got, torch_lr, rtol=1e-5)
  # one warm-up epoch of 5 steps from 0 to 0.1, then linear to 0 over the last 25 steps.
  got = _lrs(builder.make_schedule(_cfg(schedule="linear", warmup_epochs=1), total, 5), total + 2)
  t = np.arange(total + 2)
  want = np.where(t < 5, 0.1 * t / 5, 0.1 * (1 - np.minimum(t - 5, 25) / 25))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_multistep_matches_torch_multistep_lr_in_epochs_and_steps():
  spe, n = 3, 40
  cfg = _cfg(schedule="multistep", milestones=[2, 5, 5, 9], gamma=0.3)
  got = _lrs(builder.make_schedule(cfg, n, spe), n)
  torch_lr = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5, 9], 0.3),
                        n, per=spe)
  np.testing.assert_allclose(got, torch_lr, rtol=1e-6)
  cfg = _cfg(schedule="multistep", milestone_steps=[4, 7])  # gamma defaults to torch's 0.1
  got = _lrs(builder.make_schedule(cfg, n, spe), 12)
  torch_lr = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 7]), 12)
  np.testing.assert_allclose(got, torch_lr, rtol=1e-6)


def test_piecewise_table():
  spe = 4
  cfg = _cfg(schedule="piecewise", learning_rate=0.5,
             lr_table=[(1, 0.2), (2.5, 0.05), (4, 0.001)])
  got = _lrs(builder.make_schedule(cfg, 40, spe), 24)
  epoch = np.arange(24) / spe
  want = np.select([epoch >= 4, epoch >= 2.5, epoch >= 1], [0.001, 0.05, 0.2], 0.5)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("cfg, match", [
    (dict(schedule="exponential_warm"), r"Unknown schedule 'exponential_warm'.*register_schedule"),
    (dict(schedule="multistep"), "milestones"),
    (dict(schedule="multistep", milestones=[3], milestone_steps=[4]), "exactly one"),
    (dict(schedule="multistep", milestones=[5, 3]), "non-decreasing"),
    (dict(schedule="piecewise"), "lr_table"),
    (dict(schedule="piecewise", lr_table=[0.1, 0.2]), "pairs"),
])
def test_schedule_config_errors(cfg, match):
  with pytest.raises(ConfigError, match=match):
    builder.make_schedule(_cfg(**cfg), 10, 2)


def test_unknown_schedule_lists_every_registered_one():
  # Other modules register their own schedules (GAN decay, re-ID warm-up), so the list is read
  # from the registry rather than spelled out here.
  with pytest.raises(ConfigError) as info:
    builder.make_schedule(_cfg(schedule="exponential_warm"), 10, 2)
  names = builder.schedule_names()
  assert {"constant", "cosine", "linear", "multistep", "piecewise", "step"} <= set(names)
  assert ", ".join(sorted(names)) in str(info.value)


def test_register_schedule():
  name = "test_halve_each_epoch"
  builder.register_schedule(name, lambda cfg, total, spe: optax.exponential_decay(
      cfg.learning_rate, spe, 0.5, staircase=True), override=True)
  assert name in builder.schedule_names()
  got = _lrs(builder.make_schedule(_cfg(schedule=name), 10, 2), 6)
  np.testing.assert_allclose(got, 0.1 * 0.5 ** (np.arange(6) // 2), rtol=1e-6)
  with pytest.raises(ValueError, match="registered already"):
    builder.register_schedule(name, lambda *a: None)


# ---------------------------------------------------------------------------------- optimizers
def _grads(seed, shapes):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) * 3 for s in shapes]


def _run_jax(cfg, init, grads_seq, total=10):
  params = {f"p{i}": jnp.asarray(x) for i, x in enumerate(init)}
  tx = builder.make_optimizer(cfg, params, total, 2)
  opt = tx.init(params)
  step = jax.jit(lambda g, o, p: builder.apply_updates(tx, g, o, p))
  for grads in grads_seq:
    params, opt = step({f"p{i}": jnp.asarray(g) for i, g in enumerate(grads)}, opt, params)
  return [np.asarray(params[f"p{i}"]) for i in range(len(init))]


def _run_torch(make_opt, init, grads_seq, clip=0.0, groups=None):
  ps = [torch.nn.Parameter(torch.tensor(x)) for x in init]
  opt = make_opt(ps if groups is None else groups(ps))
  for grads in grads_seq:
    for p, g in zip(ps, grads):
      p.grad = torch.tensor(g)
    if clip:
      torch.nn.utils.clip_grad_norm_(ps, clip)
    opt.step()
  return [p.detach().numpy() for p in ps]


SHAPES = [(3, 4), (5,), (2, 2, 3)]


@pytest.mark.parametrize("name, kw, make_opt", [
    ("sgd", dict(momentum=0.9, weight_decay=1e-2),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("adam", dict(b1=0.5, b2=0.99, weight_decay=1e-2),
     lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.5, 0.99), weight_decay=1e-2)),
    ("adamw", dict(weight_decay=1e-1),
     lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=1e-1)),
])
def test_optimizers_match_torch(name, kw, make_opt):
  init = _grads(0, SHAPES)
  seq = [_grads(s, SHAPES) for s in range(1, 5)]
  got = _run_jax(_cfg(name=name, **kw), init, seq)
  want = _run_torch(make_opt, init, seq)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
  grads = _grads(7, SHAPES)
  tensors = [torch.tensor(g) for g in grads]
  ps = [torch.nn.Parameter(torch.zeros_like(t)) for t in tensors]
  for p, t in zip(ps, tensors):
    p.grad = t.clone()
  torch.nn.utils.clip_grad_norm_(ps, max_norm)
  tx = builder.clip_grad_norm(max_norm)
  out, _ = jax.jit(tx.update)([jnp.asarray(g) for g in grads], tx.init(None))
  for o, p in zip(out, ps):
    np.testing.assert_allclose(np.asarray(o), p.grad.numpy(), rtol=1e-6, atol=1e-7)
  if max_norm > 100:  # below the norm: untouched
    for o, g in zip(out, grads):
      np.testing.assert_array_equal(np.asarray(o), g)
  else:
    np.testing.assert_allclose(math.sqrt(sum(float(np.sum(np.asarray(o) ** 2)) for o in out)),
                               max_norm, rtol=1e-5)


def test_grad_clip_is_one_global_norm_before_weight_decay_and_groups():
  # torch: clip_grad_norm_ over all parameters, then SGD with two parameter groups (different
  # learning rates, coupled weight decay, momentum): the reference for optim.grad_clip + groups.
  init = _grads(0, SHAPES)
  seq = [_grads(s, SHAPES) for s in range(1, 5)]
  cfg = _cfg(momentum=0.9, weight_decay=5e-2, grad_clip=2.0,
             groups=[{"regex": "p1", "learning_rate": 0.5, "weight_decay": 0.0}])
  got = _run_jax(cfg, init, seq)
  want = _run_torch(
      lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=5e-2), init, seq, clip=2.0,
      groups=lambda ps: [{"params": [ps[0], ps[2]]},
                         {"params": [ps[1]], "lr": 0.5, "weight_decay": 0.0}])
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)
  # without grad_clip the same run differs (the gradients here are far above norm 2).
  unclipped = _run_jax(_cfg(**{**cfg.to_dict(), "grad_clip": 0.0}), init, seq)
  assert not np.allclose(unclipped[0], got[0], atol=1e-3)


def test_no_clip_keeps_the_optimizer_state_structure():
  params = {"w": jnp.ones((2,))}
  plain = jax.tree.structure(optax.sgd(optax.constant_schedule(0.1), 0.9).init(params))
  assert jax.tree.structure(builder.make_optimizer(
      _cfg(momentum=0.9), params, 10, 2).init(params)) == plain
  clipped = builder.make_optimizer(_cfg(momentum=0.9, grad_clip=1.0), params, 10, 2).init(params)
  assert isinstance(clipped[0], optax.EmptyState) and jax.tree.structure(clipped[1]) == plain


@pytest.mark.parametrize("cfg, match", [
    (dict(name="lamb_v2"), "adam, adamw, sgd"),
    (dict(grad_clip=-1.0), "grad_clip must be >= 0"),
    (dict(groups=[{"regex": ".*", "grad_clip": 1.0}]), "set optim.grad_clip instead"),
])
def test_optimizer_config_errors(cfg, match):
  with pytest.raises(ConfigError, match=match):
    builder.make_optimizer(_cfg(**cfg), {"w": jnp.ones(2)}, 10, 2)


def test_register_optimizer():
  name = "test_sign_sgd"
  builder.register_optimizer(name, lambda cfg, lr: optax.chain(
      optax.scale_by_sign(), optax.scale_by_learning_rate(lr)), override=True)
  assert name in builder.optimizer_names()
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  tx = builder.make_optimizer(_cfg(name=name, grad_clip=1.0), params, 10, 2)
  new, _ = builder.apply_updates(tx, {"w": jnp.array([5.0, -0.5, 0.0])}, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(new["w"]), [0.9, -1.9, 3.0], rtol=1e-6)
  with pytest.raises(ValueError, match="registered already"):
    builder.register_optimizer(name, lambda cfg, lr: optax.sgd(lr))


def test_apply_updates_is_update_then_apply():
  params = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2))}
  grads = jax.tree.map(lambda x: x * 0.3 + 1.0, params)
  tx = optax.adam(0.1)
  opt = tx.init(params)
  new, new_opt = builder.apply_updates(tx, grads, opt, params)
  updates, want_opt = tx.update(grads, opt, params)
  want = optax.apply_updates(params, updates)
  for x, y in zip(jax.tree.leaves((new, new_opt)), jax.tree.leaves((want, want_opt))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
