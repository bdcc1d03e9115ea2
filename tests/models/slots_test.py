"""Model slots: the gate after each norm, per-layer widths and role-named feature taps."""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from jaxcompress.errors import ConfigError
from jaxcompress.models import cyclegan, edsr, factory, resnet_cifar, vgg_small

GATED = factory.FLOAT.replace(gate=factory.ChannelGate)


def flat(tree) -> dict[str, tuple[int, ...]]:
  return {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(tree).items()}


def strip_gates(params):
  """The param tree with every gate module (a dict holding only `mask`) removed."""
  if not isinstance(params, dict):
    return params
  return {k: strip_gates(v) for k, v in params.items()
          if not (isinstance(v, dict) and set(v) == {"mask"})}


def random_variables(model, x, seed=0):
  """Variables of `model`'s structure filled from NumPy (no compiled init: it is the slow part).

  Running variances are drawn in [0.5, 1.5], gate masks are ones, everything else N(0, 0.3^2);
  the values sown by a `_Recorder` gate at init are dropped.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  shapes.pop("gate_inputs", None)   # values `_Recorder` sows at init are activations, not state
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "var":
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name == "mask":
      value = np.ones(leaf.shape)
    else:
      value = 0.3 * rng.randn(*leaf.shape)
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def run_jit(model, x, *calls, seed=0):
  """`random_variables(model, x)` and one `apply` per `calls` entry (apply kwargs), in one jit."""
  v = random_variables(model, x, seed)
  return (v,) + jax.jit(lambda v, x: tuple(model.apply(v, x, **kw) for kw in calls))(v, x)


def images(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


class _Recorder(nn.Module):
  """A gate that sows its input (so a test sees what the gate receives) and passes it on."""
  features: int

  @nn.compact
  def __call__(self, x):
    self.sow("gate_inputs", "x", x)
    return x


MODELS = (
    ("resnet", lambda ly: resnet_cifar.CifarResNetA(depth=8, widths=(4, 8, 8), layers=ly,
                                                    bn_before_classifier=True), 8, 1 + 3 * 2 + 1),
    ("vgg", lambda ly: vgg_small.VGGSmall(layers=ly), 32, 6),
    ("generator", lambda ly: cyclegan.ResnetGenerator(ngf=4, n_blocks=2, layers=ly), 16,
     3 + 2 * 2 + 2),
    ("discriminator", lambda ly: cyclegan.NLayerDiscriminator(ndf=4, layers=ly), 32, 3),
    ("edsr", lambda ly: edsr.EDSR(scale=2, n_resblocks=2, n_feats=4, layers=ly), 8, 2),
)


class GateSlotTest(parameterized.TestCase):

  @parameterized.named_parameters(*MODELS)
  def test_gates_add_one_mask_per_norm(self, make, size, n_gates):
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    v_plain = jax.eval_shape(make(factory.FLOAT).init, jax.random.key(0), x)
    v_gated = jax.eval_shape(make(GATED).init, jax.random.key(0), x)
    gated = flat(v_gated["params"])
    masks = {k: s for k, s in gated.items() if k.endswith("/mask")}
    self.assertLen(masks, n_gates)
    for k, shape in masks.items():   # one mask entry per channel of the gated layer
      self.assertLen(shape, 1, k)
    self.assertEqual({k: s for k, s in gated.items() if k not in masks}, flat(v_plain["params"]))
    self.assertEqual(set(v_gated), set(v_plain))
    self.assertFalse(any("gate" in k for k in flat(v_plain["params"])))

  @parameterized.named_parameters(*MODELS)
  def test_gates_of_ones_keep_the_function(self, make, size, n_gates):
    del n_gates
    x = images((2, size, size, 3))
    plain, gated = make(factory.FLOAT), make(GATED)
    v_gated = random_variables(gated, x)
    v_plain = {**v_gated, "params": strip_gates(v_gated["params"])}
    zeroed = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 0 if p[-1].key == "mask" else a, v_gated["params"])
    y_plain, y_gated, y_zero = jax.jit(lambda x: (
        plain.apply(v_plain, x), gated.apply(v_gated, x),
        gated.apply({**v_gated, "params": zeroed}, x)))(x)
    # Masks of ones leave the function unchanged; zero masks change it.
    np.testing.assert_allclose(y_gated, y_plain, rtol=1e-5, atol=1e-5)
    self.assertGreater(float(jnp.abs(y_zero - y_plain).max()), 1e-3)

  def test_gate_sits_between_instance_norm_and_activation(self):
    # Instance norm output has zero mean and unit variance per sample and channel; the
    # LeakyReLU after the gate makes each hidden tap exactly leaky_relu(gate input).
    model = cyclegan.NLayerDiscriminator(ndf=4, layers=factory.FLOAT.replace(gate=_Recorder))
    x = images((2, 32, 32, 3))
    v, (y, state), y_plain = run_jit(model, x, dict(mutable=["gate_inputs", factory.TAPS]), {})
    self.assertNotIn("gate_inputs", v)
    seen = state["gate_inputs"]
    self.assertEqual(set(seen), {"gate1", "gate2", "gate3"})
    taps = factory.taps(state)
    self.assertEqual({k: t.shape for k, t in taps.items()},
                     {"hidden0": (2, 16, 16, 4), "hidden1": (2, 8, 8, 8),
                      "hidden2": (2, 4, 4, 16), "hidden3": (2, 3, 3, 32)})
    for n in (1, 2, 3):
      z = np.asarray(seen[f"gate{n}"]["x"][-1], np.float64)
      np.testing.assert_allclose(z.mean(axis=(1, 2)), 0.0, atol=1e-5)
      np.testing.assert_allclose(z.var(axis=(1, 2)), 1.0, rtol=2e-3)
      np.testing.assert_allclose(taps[f"hidden{n}"], np.where(z >= 0, z, 0.2 * z), atol=1e-6)
    # Sowing changes nothing; the last hidden layer is all the 4x4 head conv reads.
    np.testing.assert_array_equal(y, y_plain)
    head = v["params"]["head"]
    logits = jax.lax.conv_general_dilated(taps["hidden3"], head["kernel"], (1, 1), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, logits + head["bias"], rtol=1e-5, atol=1e-5)

  def test_generator_gates_between_norm_and_activation(self):
    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=1,
                                     layers=factory.FLOAT.replace(gate=_Recorder))
    x = images((2, 16, 16, 3))
    _, (_, state) = run_jit(model, x, dict(mutable=["gate_inputs", factory.TAPS]))
    seen = state["gate_inputs"]
    self.assertEqual(set(seen), {"stem_gate", "down1_gate", "down2_gate", "block0", "up1_gate",
                                 "up2_gate"})
    self.assertEqual(set(seen["block0"]), {"gate1", "gate2"})
    z = np.asarray(seen["down2_gate"]["x"][-1], np.float64)
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(axis=(1, 2)), 1.0, rtol=2e-3)
    np.testing.assert_allclose(factory.taps(state)["down2"], np.maximum(z, 0.0), atol=1e-6)

  def test_resnet_gate_after_batch_norm(self):
    # Training-mode batch norm: per channel, batch mean = bias and variance = scale^2 * v/(v+eps)
    # (v the batch variance of the conv output), whatever comes after.
    model = resnet_cifar.CifarResNetA(depth=8, widths=(4, 8, 8),
                                      layers=factory.FLOAT.replace(gate=_Recorder))
    x = images((4, 8, 8, 3))
    v, (_, state) = run_jit(model, x, dict(train=True, mutable=["batch_stats", "gate_inputs"]))
    z = np.asarray(state["gate_inputs"]["stage2_block0"]["gate1"]["x"][-1], np.float64)
    self.assertEqual(z.shape, (4, 4, 4, 8))
    bn = v["params"]["stage2_block0"]["BatchNorm_0"]
    scale, bias = np.asarray(bn["scale"], np.float64), np.asarray(bn["bias"], np.float64)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), bias, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), np.abs(scale), rtol=2e-3, atol=1e-5)
    self.assertEqual(set(state["gate_inputs"]["stage2_block0"]), {"gate1", "gate2"})


@pytest.mark.slow
class GateInitTest(parameterized.TestCase):
  """Compiles each model's init with and without gates (about 7 s per model on 2 cores)."""

  @parameterized.named_parameters(*MODELS)
  def test_gates_take_no_randomness_from_other_layers(self, make, size, n_gates):
    del n_gates
    x = images((2, size, size, 3))
    v_plain = jax.jit(make(factory.FLOAT).init)(jax.random.key(0), x)
    v_gated = jax.jit(make(GATED).init)(jax.random.key(0), x)
    # Every other parameter is the same array, so a gated model starts from the plain one.
    jax.tree_util.tree_map(np.testing.assert_array_equal, strip_gates(v_gated["params"]),
                           v_plain["params"])
    for path, value in flax.traverse_util.flatten_dict(v_gated["params"]).items():
      if path[-1] == "mask":
        np.testing.assert_array_equal(value, 1.0)


class WidthsTest(absltest.TestCase):

  def test_generator_widths_change_shapes(self):
    widths = {"stem": 3, "down1": 5, "down2": 6, "block1/conv1": 2, "up1": 7, "up2": 4}
    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=2, widths=widths)
    x = images((1, 16, 16, 3))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    shapes = flat(v["params"])
    self.assertEqual(shapes["stem/kernel"], (7, 7, 3, 3))
    self.assertEqual(shapes["down1/kernel"], (3, 3, 3, 5))
    self.assertEqual(shapes["down2/kernel"], (3, 3, 5, 6))
    self.assertEqual(shapes["block0/conv1/kernel"], (3, 3, 6, 6))    # not given: the stream's
    self.assertEqual(shapes["block1/conv1/kernel"], (3, 3, 6, 2))
    self.assertEqual(shapes["block1/conv2/kernel"], (3, 3, 2, 6))    # back to the stream width
    self.assertEqual(shapes["up1/kernel"], (3, 3, 7, 6))   # transpose_kernel: (kh, kw, out, in)
    self.assertEqual(shapes["up2/kernel"], (3, 3, 4, 7))
    self.assertEqual(shapes["head/kernel"], (7, 7, 4, 3))
    self.assertEqual(jax.eval_shape(model.apply, v, x).shape, (1, 16, 16, 3))

  def test_pruned_block_equals_masked_block(self):
    # Zeroing a block's inner gate channels (after the norm, before the ReLU) is the same function
    # as the pruned block whose conv1 keeps the other channels (and conv2 their input rows).
    ngf, keep = 2, np.array([0, 3, 5, 6])
    gated = cyclegan.ResnetGenerator(ngf=ngf, n_blocks=1, layers=GATED)
    pruned = cyclegan.ResnetGenerator(ngf=ngf, n_blocks=1, widths={"block0/conv1": len(keep)})
    x = images((2, 8, 8, 3), seed=1)
    params = flax.core.unfreeze(random_variables(gated, x, seed=3)["params"])
    mask = np.zeros(4 * ngf, np.float32)
    mask[keep] = 1.0
    params["block0"]["gate1"]["mask"] = jnp.asarray(mask)
    p = strip_gates(params)
    b = p["block0"]
    b["conv1"] = {"kernel": b["conv1"]["kernel"][..., keep], "bias": b["conv1"]["bias"][keep]}
    b["conv2"] = {**b["conv2"], "kernel": b["conv2"]["kernel"][:, :, keep, :]}
    jax.tree_util.tree_map(lambda a, s: self.assertEqual(a.shape, s.shape), p,
                           jax.eval_shape(pruned.init, jax.random.key(0), x)["params"])
    y_masked, y_pruned = jax.jit(lambda x: (gated.apply({"params": params}, x),
                                            pruned.apply({"params": p}, x)))(x)
    self.assertGreater(float(jnp.abs(y_pruned).max()), 1e-3)
    np.testing.assert_allclose(y_pruned, y_masked, rtol=1e-5, atol=1e-5)

  def test_resnet20_widths(self):
    widths = {"stage1_block0/conv1": 5, "stage2": 24, "stage3_block2/conv1": 7}
    model = resnet_cifar.ResNet20(widths=widths)
    x = images((2, 32, 32, 3))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    shapes = flat(v["params"])
    self.assertEqual(shapes["stem/kernel"], (3, 3, 3, 16))
    self.assertEqual(shapes["stage1_block0/Conv_0/kernel"], (3, 3, 16, 5))
    self.assertEqual(shapes["stage1_block0/Conv_1/kernel"], (3, 3, 5, 16))
    self.assertEqual(shapes["stage1_block0/BatchNorm_0/scale"], (5,))
    for b in range(3):
      self.assertEqual(shapes[f"stage2_block{b}/Conv_1/kernel"], (3, 3, 24, 24))
    self.assertEqual(shapes["stage3_block0/Conv_0/kernel"], (3, 3, 24, 64))
    self.assertEqual(shapes["stage3_block2/Conv_0/kernel"], (3, 3, 64, 7))
    self.assertEqual(shapes["classifier/kernel"], (64, 10))
    # Default ResNet-20 count (stem 432 + BN; 3x3 convs of 16/32/64 channels; 650 classifier).
    plain = flat(jax.eval_shape(resnet_cifar.ResNet20().init, jax.random.key(0), x)["params"])
    convs = 432 + 6 * 2304 + 4608 + 5 * 9216 + 18432 + 5 * 36864
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    self.assertEqual(sum(int(np.prod(s)) for s in plain.values()), convs + bns + 650)
    self.assertNotEqual(shapes, plain)
    self.assertEqual(jax.eval_shape(model.apply, v, x).shape, (2, 10))

  def test_empty_widths_mapping_is_the_default_model(self):
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    for a, b in ((resnet_cifar.ResNet20(widths={}), resnet_cifar.ResNet20()),
                 (cyclegan.ResnetGenerator(ngf=4, widths={}), cyclegan.ResnetGenerator(ngf=4))):
      self.assertEqual(flat(jax.eval_shape(a.init, jax.random.key(0), x)),
                       flat(jax.eval_shape(b.init, jax.random.key(0), x)))

  def test_width_errors(self):
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    key = jax.random.key(0)
    with self.assertRaisesRegex(ConfigError, "unknown layer role 'block9/conv1'"):
      jax.eval_shape(cyclegan.ResnetGenerator(ngf=2, n_blocks=2, widths={"block9/conv1": 3}).init,
                     key, x)
    with self.assertRaisesRegex(ConfigError, "Bi-Real"):
      jax.eval_shape(resnet_cifar.CifarResNetA(depth=8, bireal=True,
                                               widths={"stage1_block0/conv1": 3}).init, key, x)
    with self.assertRaisesRegex(ConfigError, "6n\\+2"):
      jax.eval_shape(resnet_cifar.CifarResNetA(depth=9).init, key, x)
    with self.assertRaisesRegex(ConfigError, "positive int"):
      jax.eval_shape(vgg_small.VGGSmall(widths={"conv3": 0}).init, key, x)


class TapsTest(absltest.TestCase):

  def test_generator_tap_roles(self):
    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=3)
    x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    self.assertEqual(set(v), {"params"})   # no activations stored by init
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=[factory.TAPS]), v, x)
    self.assertEqual({k: t.shape for k, t in factory.taps(state).items()},
                     {"down1": (2, 8, 8, 8), "down2": (2, 4, 4, 16), "res1": (2, 4, 4, 16),
                      "res2": (2, 4, 4, 16), "res3": (2, 4, 4, 16), "up1": (2, 8, 8, 8),
                      "up2": (2, 16, 16, 4)})

  def test_generator_taps_are_block_outputs(self):
    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=3)
    x = images((2, 16, 16, 3))
    _, (y, state), y_plain, (_, captured) = run_jit(
        model, x, dict(mutable=[factory.TAPS]), {},
        # flax's own record of each block's output, independent of the sown taps.
        dict(capture_intermediates=True, mutable=["intermediates"]))
    taps = factory.taps(state)
    np.testing.assert_array_equal(y, y_plain)
    for b in range(3):
      np.testing.assert_array_equal(taps[f"res{b + 1}"],
                                    captured["intermediates"][f"block{b}"]["__call__"][0])

  def test_resnet_stage_taps(self):
    model = resnet_cifar.CifarResNetA(depth=8, widths=(4, 8, 8))
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    self.assertEqual(set(v), {"params", "batch_stats"})
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=[factory.TAPS]), v, x)
    self.assertEqual({k: t.shape for k, t in factory.taps(state).items()},
                     {"stage1": (2, 8, 8, 4), "stage2": (2, 4, 4, 8), "stage3": (2, 2, 2, 8)})
    # Training mode: the taps are collected next to the updated batch statistics.
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats", factory.TAPS]), v, x)
    self.assertEqual(set(state), {"batch_stats", factory.TAPS})
    self.assertEqual(set(factory.taps(state)), {"stage1", "stage2", "stage3"})
    r18 = resnet_cifar.ResNet18()
    shapes = jax.eval_shape(lambda v, x: r18.apply(v, x, mutable=[factory.TAPS]),
                            jax.eval_shape(r18.init, jax.random.key(0), x), x)[1]
    self.assertEqual({k: t.shape[-1] for k, t in factory.taps(shapes).items()},
                     {"stage1": 64, "stage2": 128, "stage3": 256, "stage4": 512})

  def test_edsr_body_taps(self):
    model = edsr.EDSR(scale=2, n_resblocks=3, n_feats=4)
    x = images((1, 6, 6, 3)) * 50 + 100
    # flax's own record of each submodule's output lands in the same collection, next to the taps.
    _, (_, state) = run_jit(model, x, dict(return_features=True, capture_intermediates=True,
                                           mutable=[factory.TAPS]))
    _, feat = state[factory.TAPS]["__call__"][0]   # the top module's (sr, feature) output
    taps = {k: t for k, t in factory.taps(state).items() if "__call__" not in k}
    self.assertEqual(set(taps), {"body_0", "body_1", "body_2", "body"})
    np.testing.assert_array_equal(taps["body"], feat)
    np.testing.assert_array_equal(taps["body_1"], state[factory.TAPS]["body_1"]["__call__"][0])


if __name__ == "__main__":
  absltest.main()
