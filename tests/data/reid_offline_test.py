"""Tests for the offline synthetic re-identification data: determinism, split sizes and labels,
cameras, identity consistency across cameras, and the style difference between domains."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcompress.data import reid_offline, sources, transforms
from jaxcompress.errors import ConfigError

SMALL = dict(num_ids=12, images_per_id=4, num_test_ids=10, query_per_id=2, gallery_per_id=3,
             num_cameras=5, image_size=(32, 16))


def _build(split, **kwargs):
  return reid_offline.synthetic_reid(split, **{**SMALL, **kwargs})


def test_deterministic_from_the_seed():
  first = _build("train", seed=3).images.copy()
  reid_offline._render_split.cache_clear()  # pylint: disable=protected-access
  np.testing.assert_array_equal(_build("train", seed=3).images, first)
  assert not np.array_equal(_build("train", seed=4).images, first)
  # Rendered arrays are shared read-only.
  with pytest.raises(ValueError):
    _build("train", seed=3).images[0, 0, 0, 0] = 1


def test_split_sizes_labels_and_examples():
  train, query, gallery = (_build(s) for s in ("train", "query", "gallery"))
  assert len(train) == 12 * 4 and len(query) == 10 * 2 and len(gallery) == 10 * 3
  np.testing.assert_array_equal(train.labels, np.repeat(np.arange(12), 4))
  assert train.num_classes == 12 and query.num_classes is None
  # Test persons are other persons, numbered after the training ones, in both test splits.
  assert set(query.labels.tolist()) == set(gallery.labels.tolist()) == set(range(12, 22))
  item = query[3]
  assert set(item) == {"image", "label", "camera", "domain"}
  assert item["image"].shape == (32, 16, 3) and item["image"].dtype == np.uint8
  assert item["domain"] == 0 and _build("query", domain="target")[0]["domain"] == 1
  assert _build("train", image_size=(64, 32)).images.shape[1:] == (64, 32, 3)


def test_cameras_spread_and_gallery_from_other_cameras():
  train, query, gallery = (_build(s) for s in ("train", "query", "gallery"))
  assert set(train.cameras.tolist()) == set(range(5))
  for k in range(12):
    # Consecutive cameras: a person's 4 images come from 4 different cameras.
    assert len(set(train.cameras[train.labels == k].tolist())) == 4
  for pid in range(12, 22):
    q = set(query.cameras[query.labels == pid].tolist())
    g = gallery.cameras[gallery.labels == pid].tolist()
    assert len(q) == 2 and len(set(g)) == 3 and not q & set(g)
  # More gallery images than free cameras: every camera once, then again.
  many = _build("gallery", gallery_per_id=6)
  assert len(set(many.cameras[many.labels == 12].tolist())) == 5


def _descriptor(images):
  """Per-image, per-channel standardised 8 x 4 thumbnails (cast and brightness removed)."""
  x = images.astype(np.float64)
  n, h, w, _ = x.shape
  x = x.reshape(n, 8, h // 8, 4, w // 4, 3).mean((2, 4))
  x = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 1e-6)
  return x.reshape(n, -1)


def test_identity_is_consistent_across_cameras():
  kw = dict(num_test_ids=30, image_size=(64, 32))
  query, gallery = _build("query", **kw), _build("gallery", **kw)
  qf, gf = _descriptor(query.images), _descriptor(gallery.images)
  dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
  # Nearest gallery image (always from another camera) is the same person far above chance.
  rank1 = np.mean(gallery.labels[dist.argmin(1)] == query.labels)
  assert rank1 > 0.5, rank1  # chance: 1 / 30
  look = reid_offline.appearance(0, 0, 12)
  assert look["pattern"] == reid_offline.appearance(0, 0, 12)["pattern"]
  np.testing.assert_array_equal(look["top"], reid_offline.appearance(0, 0, 12)["top"])


def test_unstyled_render_paints_only_the_persons_colours():
  look = reid_offline.appearance(5, 1, 7)
  palette = {tuple(np.round(np.asarray(look[k]), 6)) for k in (
      "skin", "hair", "top", "top2", "bottom", "shoes", "bag_colour")} | {(0.0, 0.0, 0.0)}
  for seed in range(4):  # different poses
    image = reid_offline.render(look, 64, 32, np.random.default_rng(seed), np.zeros((64, 32, 3)))
    colours = {tuple(c) for c in np.round(image.reshape(-1, 3), 6)}
    assert colours <= palette
    top_pixels = np.all(np.isclose(image, look["top"]), -1).sum()
    assert top_pixels > 30  # the top is a large visible part in every pose


def _stats(images):
  """Chromaticity: the mean colour over the images, as fractions of its sum."""
  mean = images.astype(np.float64).mean((0, 1, 2))
  return mean / mean.sum()


def test_domains_differ_in_style_and_not_without_it():
  src, tgt = _build("train", domain="source"), _build("train", domain="target")
  c0, c1 = _stats(src.images), _stats(tgt.images)
  # Domain 0 has a warm cast, domain 1 a cool one.
  assert c0[0] > c0[2] and c1[2] > c1[0] and np.abs(c0 - c1).max() > 0.05
  # Within a domain the camera differences are smaller than the domain gap.
  cams = [_stats(src.images[src.cameras == c]) for c in range(5)]
  assert max(np.abs(a - b).max() for a in cams for b in cams) < np.abs(c0 - c1).max()
  # Without domain styles the two domains (other persons, same neutral style) look alike.
  flat = [_stats(_build("train", domain=d, style_strength=0.0).images)[0] for d in (0, 1)]
  assert np.abs(flat[0] - flat[1]).max() < 0.2 * np.abs(c0 - c1).max()
  # Domain 0 is sharp, domain 1 blurred: the same picture, both styles without sensor noise.
  look = reid_offline.appearance(0, 0, 0)
  plain = reid_offline.render(look, 64, 32, np.random.default_rng(0), np.full((64, 32, 3), 0.5))
  camera = reid_offline.camera_style(0, 0, 0, strength=0.0)
  sharpness = []
  for d in (0, 1):
    style = {**reid_offline.domain_style(d), "noise": 0.0}
    styled = reid_offline.stylise(plain, style, camera, np.random.default_rng(1))
    x = styled.astype(np.float64)
    # Gradient energy relative to the image variance (a blur lowers it; contrast does not).
    sharpness.append((np.diff(x, axis=1) ** 2).mean() / x.var())
  assert sharpness[0] > 1.5 * sharpness[1], sharpness
  neutral = reid_offline.domain_style(3, 0.0)
  np.testing.assert_allclose(neutral["cast"], 1.0)
  assert neutral["blur"] == 0.0 and neutral["brightness"] == 1.0
  styles = [reid_offline.domain_style(d) for d in range(9)]
  casts = np.stack([s["cast"] for s in styles])
  assert min(np.abs(casts[i] - casts[j]).max() for i in range(9) for j in range(i)) > 0.01


def test_dg_concatenates_source_domains_with_offsets():
  train = reid_offline.synthetic_reid_dg("train", num_sources=3, num_ids=4, images_per_id=2,
                                         num_cameras=3, query_per_id=1)
  assert train.id_offsets == (0, 4, 8) and train.num_classes == 12
  items = [train[i] for i in range(len(train))]
  assert [it["domain"] for it in items] == [0] * 8 + [1] * 8 + [2] * 8
  np.testing.assert_array_equal([it["label"] for it in items], np.repeat(np.arange(12), 2))
  np.testing.assert_array_equal(train.id_domains, np.repeat(np.arange(3), 4))
  query = reid_offline.synthetic_reid_dg("query", num_sources=3, target=1, num_ids=4,
                                         num_cameras=3, query_per_id=1, num_test_ids=5)
  assert query[0]["domain"] == 4 and query[0]["image"].shape == (32, 16, 3)


def test_registered_and_arguments_checked():
  transforms.load_providers()
  source = sources.get("synthetic_reid", "gallery", **SMALL)
  assert len(source) == 30
  with pytest.raises(ConfigError, match="domain"):
    _build("train", domain="night")
  with pytest.raises(ConfigError, match="cameras"):
    _build("query", num_cameras=2, query_per_id=2)
  with pytest.raises(ConfigError, match="splits"):
    _build("test")
  with pytest.raises(ConfigError, match="image_size"):
    _build("train", image_size=(8, 4))
