"""Augmentations: random erasing against a re-implementation of arXiv:1708.04896 Alg. 1, clip
augmentations with one decision for all frames, and the named registry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jaxcompress import errors
from jaxcompress.data import augment


class _Draws:
  """The stdlib `random` calls of the reference (`uniform`, inclusive `randint`) on a NumPy
  generator, so the reference consumes the same stream as the implementation."""

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)

  def uniform(self, a, b):
    return self.rng.uniform(a, b)

  def randint(self, a, b):
    return int(self.rng.integers(a, b + 1))

  def random(self):
    return self.rng.random()


def _reference_erasing(img_chw, draws, probability, sl, sh, r1, mean):
  """Zhong et al. Alg. 1 as written for CHW tensors in the re-identification code."""
  if draws.random() >= probability:
    return img_chw, None
  for _ in range(100):
    area = img_chw.shape[1] * img_chw.shape[2]
    target_area = draws.uniform(sl, sh) * area
    aspect_ratio = draws.uniform(r1, 1 / r1)
    h = int(round(math.sqrt(target_area * aspect_ratio)))
    w = int(round(math.sqrt(target_area / aspect_ratio)))
    if w < img_chw.shape[2] and h < img_chw.shape[1]:
      x1 = draws.randint(0, img_chw.shape[1] - h)
      y1 = draws.randint(0, img_chw.shape[2] - w)
      img_chw = img_chw.copy()
      for c in range(img_chw.shape[0]):
        img_chw[c, x1:x1 + h, y1:y1 + w] = mean[c] if img_chw.shape[0] == 3 else mean[0]
      return img_chw, (x1, y1, h, w)
  return img_chw, None


def _erased_box(before, after):
  """The bounding box of changed pixels, after checking they form a full rectangle."""
  changed = np.any(before != after, axis=-1)
  if not changed.any():
    return None
  rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
  top, left, h, w = rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
  assert changed[top:top + h, left:left + w].all() and changed.sum() == h * w
  return int(top), int(left), int(h), int(w)


@pytest.mark.parametrize("shape,area,aspect", [((32, 16, 3), (0.02, 0.4), 0.3),
                                               ((24, 24, 3), (0.1, 0.9), 0.5),
                                               ((6, 5, 1), (0.3, 0.9), 0.3)])
def test_random_erasing_matches_the_algorithm(shape, area, aspect):
  value = (0.4914, 0.4822, 0.4465)
  applied = 0
  for seed in range(60):
    image = np.random.default_rng(10_000 + seed).random(shape).astype(np.float32)
    out = augment.random_erasing(image, np.random.default_rng(seed), probability=0.7, area=area,
                                 aspect=aspect, value=value)
    ref, box = _reference_erasing(image.transpose(2, 0, 1), _Draws(seed), 0.7, area[0], area[1],
                                  aspect, value)
    np.testing.assert_array_equal(out, ref.transpose(1, 2, 0))
    assert _erased_box(image, out) == box
    if box is not None:
      applied += 1
      top, left, h, w = box
      big_h, big_w = shape[:2]
      assert h < big_h and w < big_w and top + h <= big_h and left + w <= big_w
      # h, w are roundings of sqrt(S r), sqrt(S / r): S and r lie within the rounding intervals.
      assert (h + .5) * (w + .5) >= area[0] * big_h * big_w
      assert (h - .5) * (w - .5) <= area[1] * big_h * big_w
      assert (h + .5) / (w - .5) >= aspect and (h - .5) / (w + .5) <= 1 / aspect
      fill = value if shape[2] == 3 else value[:1]
      np.testing.assert_array_equal(out[top:top + h, left:left + w],
                                    np.broadcast_to(np.float32(fill), (h, w, shape[2])))
    assert image.dtype == out.dtype
  assert applied > 20
  # The input is never modified in place.
  image = np.zeros(shape, np.float32)
  augment.random_erasing(image, np.random.default_rng(0), probability=1.0)
  assert not image.any()


def test_random_erasing_probability_and_area_distribution():
  image = np.random.default_rng(0).random((40, 30, 3))
  fractions, erased = [], 0
  for seed in range(1500):
    out = augment.random_erasing(image, np.random.default_rng(seed), probability=0.3)
    box = _erased_box(image, out)
    if box is not None:
      erased += 1
      fractions.append(box[2] * box[3] / (40 * 30))
  # Binomial(1500, 0.3): standard deviation 0.012.
  assert abs(erased / 1500 - 0.3) < 0.05
  # Accepted areas are U(0.02, 0.4) minus the tall/wide rejections, which remove large areas
  # more often: the mean lies a little below 0.21 and well above sl.
  assert 0.15 < np.mean(fractions) < 0.22 and min(fractions) < 0.05 and max(fractions) > 0.3
  never = [augment.random_erasing(image, np.random.default_rng(s), probability=0.0)
           for s in range(20)]
  assert all(o is image for o in never)


def test_random_erasing_units_and_clips():
  raw = np.random.default_rng(1).integers(0, 256, (20, 16, 3), dtype=np.uint8)
  value = (0.2, 0.5, 1.0)
  out = augment.random_erasing(raw, np.random.default_rng(3), probability=1.0, value=value)
  top, left, h, w = _erased_box(raw, out)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[top, left], [51, 128, 255])  # round(255 * value)

  clip = np.random.default_rng(2).random((5, 20, 16, 3))
  out = augment.random_erasing(clip, np.random.default_rng(4), probability=1.0, value=0.25)
  boxes = {_erased_box(clip[t], out[t]) for t in range(5)}
  assert len(boxes) == 1 and None not in boxes
  # The same draws as for one frame.
  np.testing.assert_array_equal(
      out[2], augment.random_erasing(clip[2], np.random.default_rng(4), probability=1.0,
                                     value=0.25))
  with pytest.raises(errors.ConfigError, match="2 entries for a 3-channel"):
    augment.random_erasing(clip, np.random.default_rng(0), probability=1.0, value=(0.1, 0.2))
  with pytest.raises(errors.ConfigError, match="sl <= sh"):
    augment.random_erasing(clip, np.random.default_rng(0), area=(0.5, 0.2))


def _frames(t=4, h=9, w=7, c=2):
  """A clip whose every pixel value is unique, so crops can be located."""
  return np.arange(t * h * w * c, dtype=np.float32).reshape(t, h, w, c)


def test_augment_clip_uses_one_crop_and_flip_for_all_frames():
  clip = _frames()
  flips = set()
  for seed in range(40):
    out = augment.augment_clip(clip, np.random.default_rng(seed), crop_padding=2, flip=True)
    assert out.shape == clip.shape
    per_frame = [augment.augment(clip[t], np.random.default_rng(seed), crop_padding=2, flip=True)
                 for t in range(clip.shape[0])]
    np.testing.assert_array_equal(out, np.stack(per_frame))
    # Independently: pad, crop and flip with the offsets read back from the generator.
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 5, size=2)
    flip = rng.random() < 0.5
    padded = np.pad(clip, ((0, 0), (2, 2), (2, 2), (0, 0)))[:, top:top + 9, left:left + 7]
    np.testing.assert_array_equal(out, padded[:, :, ::-1] if flip else padded)
    flips.add(flip)
  assert flips == {True, False}
  np.testing.assert_array_equal(augment.augment_clip(clip, np.random.default_rng(0)), clip)


def test_random_crop_clip_same_offsets():
  clip = _frames()
  offsets = set()
  for seed in range(30):
    out = augment.random_crop_clip(clip, np.random.default_rng(seed), (5, 4))
    assert out.shape == (4, 5, 4, 2)
    # Locate frame 0's crop by its first pixel, then every frame must use that window.
    t0_pos = np.argwhere(clip[0] == out[0, 0, 0, 0])[0]
    top, left = int(t0_pos[0]), int(t0_pos[1])
    np.testing.assert_array_equal(out, clip[:, top:top + 5, left:left + 4])
    offsets.add((top, left))
  assert len(offsets) > 5
  assert augment.random_crop_clip(clip[0], np.random.default_rng(0), 3).shape == (3, 3, 2)
  with pytest.raises(errors.ConfigError, match="does not fit"):
    augment.random_crop_clip(clip, np.random.default_rng(0), 10)


def test_compose_matches_augment_and_handles_clips():
  image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
  fn = augment.compose([("crop", {"padding": 4}), "flip"])
  for seed in range(10):
    np.testing.assert_array_equal(
        fn(image, np.random.default_rng(seed)),
        augment.augment(image, np.random.default_rng(seed), crop_padding=4, flip=True))
  # Clips get the clip versions: every frame gets the same decisions.
  clip = np.repeat(image[None], 3, axis=0)
  full = augment.compose([{"name": "crop", "padding": 3}, ("flip", {}),
                          ("random_erasing", {"probability": 1.0}), ("cutout", {"length": 4})])
  for seed in range(10):
    out = full(clip, np.random.default_rng(seed))
    assert out.shape == clip.shape
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
  np.testing.assert_array_equal(augment.compose([])(image, np.random.default_rng(0)), image)
  np.testing.assert_array_equal(augment.compose(None)(image, np.random.default_rng(0)), image)


def test_registered_cutout_and_erasing_equal_the_functions():
  image = np.random.default_rng(1).random((16, 16, 3))
  for seed in range(5):
    np.testing.assert_array_equal(
        augment.get_augmentation("cutout", length=6)(image, np.random.default_rng(seed)),
        augment.cutout(image, np.random.default_rng(seed), 6))
    np.testing.assert_array_equal(
        augment.get_augmentation("random_erasing", probability=0.5, value=0.0)(
            image, np.random.default_rng(seed)),
        augment.random_erasing(image, np.random.default_rng(seed), probability=0.5, value=0.0))
  clip = np.stack([image, image + 1])
  out = augment.get_augmentation("cutout", length=6)(clip, np.random.default_rng(7))
  np.testing.assert_array_equal(out[0], augment.cutout(image, np.random.default_rng(7), 6))
  np.testing.assert_array_equal(out[1], augment.cutout(image + 1, np.random.default_rng(7), 6))
  assert {"crop", "flip", "random_erasing", "cutout", "random_crop"} <= set(
      augment.augmentation_names())


def test_bad_configs_raise_config_errors():
  with pytest.raises(errors.ConfigError, match="Unknown augmentation 'blur'"):
    augment.get_augmentation("blur")
  with pytest.raises(errors.ConfigError, match="does not accept"):
    augment.get_augmentation("flip", padding=4)
  with pytest.raises(errors.ConfigError, match="padding must be a non-negative integer"):
    augment.get_augmentation("crop", padding=-1)
  with pytest.raises(errors.ConfigError, match="probability must be in"):
    augment.compose([("random_erasing", {"probability": 2.0})])
  with pytest.raises(errors.ConfigError, match="has no 'name'"):
    augment.compose([{"padding": 4}])
  with pytest.raises(errors.ConfigError, match="is not a name"):
    augment.compose([3])
  with pytest.raises(errors.ConfigError, match=r"got shape \(2, 2\)"):
    augment.get_augmentation("flip")(np.zeros((2, 2)), np.random.default_rng(0))


def test_reference_randint_is_inclusive_like_the_stdlib():
  draws = _Draws(0)
  assert {draws.randint(2, 4) for _ in range(200)} == {2, 3, 4}
