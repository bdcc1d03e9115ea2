"""Tests for the "fid" evaluator (jaxcompress.evals.fid): feature mode, image mode, statistics."""
from __future__ import annotations

import os
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcompress import evals
from jaxcompress.errors import ConfigError
from jaxcompress.metrics import fid
from jaxcompress.models import fid_inception

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "models"))
import fid_inception_test  # noqa: E402  (pytorch-fid's network built in PyTorch)


class FeatureMethod:
  """predict: real features scaled by the state, fake features as given."""

  def predict(self, state, batch):
    return {"real_features": batch["real"] * state["scale"], "fake_features": batch["fake"],
            "gen": batch["fake"] + 1.0}


class ImageMethod:
  """predict: the batch's images under the evaluator's default keys."""

  def predict(self, state, batch):
    del state
    return {k: batch[k] for k in ("real_images", "fake_images") if k in batch}


def build(method, **cfg):
  cfg = ml_collections.ConfigDict(dict(type="fid", split="test", **cfg))
  return evals.get("fid")("fid", method, cfg, 10)


def run(evaluator, state, batch):
  """Outputs of one batch as the engine hands them to finalize (one split, no padding)."""
  out = jax.device_get(jax.jit(evaluator.batch_outputs)(state, batch))
  return {"test": {k: np.asarray(v) for k, v in out.items()}}


def features(seed, n, d, shift=0.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift).astype(
      np.float32)


# ---- feature mode ------------------------------------------------------------------------------

def test_feature_mode_is_the_frechet_distance_of_the_gathered_features():
  real, fake = features(0, 40, 6), features(1, 30, 6, shift=0.5)
  ev = build(FeatureMethod())
  assert ev.combine == {"real": evals.GATHER, "fake": evals.GATHER}
  # predict's arrays must have one row per example; different counts are fine for FID.
  batch = {"real": jnp.asarray(real[:30]), "fake": jnp.asarray(fake)}
  outputs = run(ev, {"scale": jnp.float32(2.0)}, batch)
  np.testing.assert_allclose(outputs["test"]["real"], 2 * real[:30], rtol=1e-6)
  got = ev.finalize(outputs)["fid"]
  want = fid.frechet_distance(*fid.feature_statistics(2.0 * real[:30].astype(np.float64)),
                              *fid.feature_statistics(fake.astype(np.float64)))
  assert got == pytest.approx(want, rel=1e-6)
  assert got > 0.5  # the shifted set is far


def test_feature_mode_with_precomputed_real_statistics(tmp_path):
  real, fake = features(2, 50, 5), features(3, 20, 5, shift=0.2)
  mu, sigma = fid.feature_statistics(real)
  fid.save_statistics(tmp_path / "real.npz", mu, sigma)
  ev = build(FeatureMethod(), real_stats=str(tmp_path / "real.npz"), fake_key="gen")
  assert ev.combine == {"fake": evals.GATHER}
  # The real key is never read: the method may not return it at all.
  batch = {"real": jnp.zeros((20, 5)), "fake": jnp.asarray(fake)}
  outputs = run(ev, {"scale": jnp.float32(1.0)}, batch)
  assert set(outputs["test"]) == {"fake"}
  want = fid.frechet_distance(mu, sigma, *fid.feature_statistics((fake + np.float32(1)).astype(np.float64)))
  assert ev.finalize(outputs)["fid"] == pytest.approx(want, rel=1e-9)


def test_missing_predict_key_and_bad_statistics_are_config_errors(tmp_path):
  ev = build(FeatureMethod(), fake_key="fake_images")
  with pytest.raises(ConfigError, match=r"reads \['fake_images'\].*fake_features"):
    ev.batch_outputs({"scale": 1.0}, {"real": jnp.zeros((2, 3)), "fake": jnp.zeros((2, 3))})
  with pytest.raises(ConfigError, match="real_stats.*does not exist"):
    build(FeatureMethod(), real_stats=str(tmp_path / "none.npz"))
  np.savez(tmp_path / "bad.npz", mean=np.zeros(3), sigma=np.eye(3))
  with pytest.raises(ConfigError, match=r"lacks \['mu'\]"):
    build(FeatureMethod(), real_stats=str(tmp_path / "bad.npz"))


def test_missing_inception_weights_says_how_to_get_them(tmp_path):
  with pytest.raises(ConfigError, match=r"do not exist.*github\.com/mseitzer/pytorch-fid/"
                                        r"releases/download/fid_weights/"):
    build(ImageMethod(), inception_weights=str(tmp_path / "pt_inception.pth"))


# ---- image mode --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
  """pytorch-fid's network with random weights (see fid_inception_test) saved as its weight
  file, and the converted variables."""
  net = fid_inception_test.torch_fid_inception(seed=1)
  path = tmp_path_factory.mktemp("fid") / fid_inception.FID_WEIGHTS_FILE
  torch.save(net.state_dict(), path)
  return str(path), fid_inception.load_pytorch_fid(str(path))


# One compiled reference for both image tests: four 24x20 RGB images.
_pool3 = jax.jit(fid_inception.pool3_features)


def test_image_mode_quantizes_and_embeds_fakes_against_real_statistics(fid_weights, tmp_path):
  weights, variables = fid_weights
  rng = np.random.default_rng(4)
  # Generator outputs in [-1, 1]: 8-bit levels (as decoded images normalised in float32) plus
  # less than one level, and values beyond the range, which tensor2im clips.
  levels = rng.integers(0, 256, size=(2, 24, 20, 3))
  images = (levels / 127.5 - 1).astype(np.float32)
  images = images + rng.uniform(0, 0.9, size=images.shape).astype(np.float32) / 127.5
  images[0, :3, :4] = 1.7
  images[1, 5:7, :] = -1.4
  levels[0, :3, :4], levels[1, 5:7, :] = 255, 0
  mu, sigma = rng.normal(size=2048), np.eye(2048)
  fid.save_statistics(tmp_path / "real.npz", mu, sigma)
  ev = build(ImageMethod(), inception_weights=weights, real_stats=str(tmp_path / "real.npz"))
  assert ev.combine == {"fake": evals.GATHER}
  outputs = run(ev, {}, {"fake_images": jnp.asarray(images)})
  # The expected features, and those of the images without 8-bit rounding (which must differ).
  want = np.asarray(_pool3(variables, np.concatenate([levels / 255, (images + 1) / 2])
                           .astype(np.float32)))
  want, unrounded = want[:2], want[2:]
  got = outputs["test"]["fake"]
  assert got.shape == (2, 2048)
  tol = 1e-5 * np.abs(want).max()
  assert np.abs(want[0] - want[1]).max() > 1e3 * tol
  assert np.abs(unrounded - want).max() > 10 * tol
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol)
  # finalize: the statistics of the file against those of the gathered features. (A 2048-d
  # sqrtm takes minutes on two cores; the distance itself is tested in metrics/fid_test.)
  with mock.patch.object(fid, "frechet_distance", return_value=12.5) as distance:
    assert ev.finalize(outputs) == {"fid": 12.5}
  m1, s1, m2, s2 = distance.call_args.args
  np.testing.assert_array_equal(m1, mu)
  np.testing.assert_array_equal(s1, sigma)
  want_mu, want_sigma = fid.feature_statistics(got.astype(np.float64))
  np.testing.assert_allclose(m2, want_mu, rtol=1e-12)
  np.testing.assert_allclose(s2, want_sigma, rtol=1e-12)


def test_image_mode_embeds_real_and_fake_and_saves_real_statistics(fid_weights, tmp_path):
  weights, variables = fid_weights
  rng = np.random.default_rng(5)
  # One-channel images in [0, 1], not quantized: tiled to RGB, then the plain network.
  real = rng.uniform(size=(2, 24, 20, 1)).astype(np.float32)
  fake = rng.uniform(size=(2, 24, 20, 1)).astype(np.float32) ** 2
  ev = build(ImageMethod(), inception_weights=weights, image_range=(0, 1), quantize=False,
             save_real_stats=str(tmp_path / "stats" / "real.npz"))
  assert ev.combine == {"real": evals.GATHER, "fake": evals.GATHER}
  outputs = run(ev, {}, {"real_images": jnp.asarray(real), "fake_images": jnp.asarray(fake)})
  want = np.asarray(_pool3(variables, np.repeat(np.concatenate([real, fake]), 3, axis=-1)))
  tol = 1e-5 * np.abs(want).max()
  np.testing.assert_allclose(outputs["test"]["real"], want[:2], rtol=1e-5, atol=tol)
  np.testing.assert_allclose(outputs["test"]["fake"], want[2:], rtol=1e-5, atol=tol)
  with mock.patch.object(fid, "frechet_distance", return_value=3.0) as distance:
    assert ev.finalize(outputs) == {"fid": 3.0}
  mu, sigma = fid.load_statistics(tmp_path / "stats" / "real.npz")
  want_mu, want_sigma = fid.feature_statistics(outputs["test"]["real"].astype(np.float64))
  np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, want_sigma, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(distance.call_args.args[0], want_mu, rtol=1e-12)


def test_image_mode_config_errors(fid_weights, tmp_path):
  weights, _ = fid_weights
  with pytest.raises(ConfigError, match="image_range"):
    build(ImageMethod(), inception_weights=weights, image_range=(1, -1))
  fid.save_statistics(tmp_path / "small.npz", np.zeros(64), np.eye(64))
  with pytest.raises(ConfigError, match="2048-d"):
    build(ImageMethod(), inception_weights=weights, real_stats=str(tmp_path / "small.npz"))
  ev = build(ImageMethod(), inception_weights=weights)
  with pytest.raises(ConfigError, match="NHWC images with 1 or 3 channels"):
    ev.batch_outputs({}, {"real_images": jnp.zeros((2, 8, 8, 4)),
                          "fake_images": jnp.zeros((2, 8, 8, 4))})


# ---- through the engine ------------------------------------------------------------------------

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "train"))
import loop_test  # noqa: E402  (the toy config of the engine tests)
import toy_method  # noqa: E402

from jaxcompress import methods  # noqa: E402


@methods.register("toy_fid_identity")
class IdentityGenerator(toy_method.ToyMethod):
  """A "generator" that returns its (normalised) input images."""

  def predict(self, state, batch):
    del state
    return {"fake_images": batch["image"]}


@pytest.mark.slow
def test_engine_gathers_features_of_the_exact_dataset_images(fid_weights, tmp_path):
  # 20 examples in eval batches of 8 on the 8 test devices: a padded last batch. The data
  # pipeline's normalisation is undone by image_range, and the 8-bit rounding gives back the
  # dataset's bytes, so the features are those of the uint8 images / 255, in dataset order.
  from jaxcompress.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from jaxcompress.train import loop  # pylint: disable=g-import-not-at-top
  weights, variables = fid_weights
  c = loop_test.toy_config(method="toy_fid_identity", num_epochs=1)
  c.data.source_kwargs = {"num_examples": 20, "image_shape": (6, 5, 3), "num_classes": 4}
  c.data.batch_size = c.data.eval_batch_size = 8
  options = pipeline.ImageOptions.from_config(c.data)
  mean, std = np.asarray(options.mean), np.asarray(options.std)
  assert np.ptp(mean) == 0 and np.ptp(std) == 0  # one range for every channel
  fid.save_statistics(tmp_path / "real.npz", np.zeros(2048), np.eye(2048))
  c.evals = ml_collections.ConfigDict({"fid": dict(
      type="fid", split="test", inception_weights=weights, real_stats=str(tmp_path / "real.npz"),
      image_range=(float(-mean[0] / std[0]), float((1 - mean[0]) / std[0])))})
  state = loop.run(c, str(tmp_path / "run"))["state"]
  with mock.patch.object(fid, "frechet_distance", return_value=1.0) as distance:
    assert loop.evaluate(c, state, names=["fid"]) == {"fid/fid": 1.0}
  src = sources.get("synthetic", "test", **c.data.source_kwargs)
  want = np.asarray(jax.jit(fid_inception.pool3_features)(
      variables, src.images.astype(np.float32) / 255))
  want_mu, want_sigma = fid.feature_statistics(want)
  _, _, mu, sigma = distance.call_args.args
  np.testing.assert_allclose(mu, want_mu, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  np.testing.assert_allclose(sigma, want_sigma, rtol=1e-4, atol=1e-8 * np.abs(want).max() ** 2)
