"""Tests for jaxcompress.selfsup's intra-video negative against the official 1-based rules.

The references follow the release's `DataSet.get_dsm_items` / `DataSet.get` / `_sample_indices`
(FingerRec/DSM-decoupling-scene-motion, `src/data/dataset.py`) step by step in 1-based frame
numbers; the results are compared after subtracting 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import selfsup


def ref_negative_start_1based(s, c, num_frames, thresh=2):
  if abs(c - s) < thresh:
    c = (c + num_frames // 3) % num_frames
  if c == 0:
    c += 1
  return c


def ref_frames_1based(p, num_frames, length, stride):
  frames = []
  for _ in range(length):
    frames.append(p)
    if p < num_frames - stride + 1:
      p += stride
    else:
      p = 1
  return frames


def _all_cases(max_frames=13):
  """Every (F, s, c) with 1 <= s, c <= F for short videos, as 0-based arrays."""
  rows = [(f, s, c) for f in range(1, max_frames + 1) for s in range(f) for c in range(f)]
  return tuple(np.array(col, np.int32) for col in zip(*rows))


class ShiftNegativeStartTest(parameterized.TestCase):

  @parameterized.parameters((2, True), (2, False), (3, False))
  def test_matches_official_rule_exhaustively(self, thresh, jit):
    f, s, c = _all_cases()
    fn = jax.jit(selfsup.shift_negative_start, static_argnums=3) if jit else (
        selfsup.shift_negative_start)
    out = np.asarray(fn(s, c, f, thresh))
    self.assertEqual(out.dtype, np.int32)
    ref = [ref_negative_start_1based(int(a) + 1, int(b) + 1, int(n), thresh) - 1
           for a, b, n in zip(s, c, f)]
    np.testing.assert_array_equal(out, ref)
    self.assertTrue(np.all((out >= 0) & (out < f)))
    # Kept candidates are far by construction; with F >= 9 (F // 3 >= 3) the shift also always
    # lands at least 2 frames away, while shorter videos can keep a near start.
    near = np.abs(out - s) < thresh
    self.assertFalse(np.any(near & (np.abs(c - s) >= thresh)))
    if thresh == 2:
      self.assertFalse(np.any(near & (f >= 9)))
      self.assertTrue(np.any(near & (f == 8)))

  def test_candidates_far_enough_are_kept(self):
    out = selfsup.shift_negative_start(jnp.array([0, 10, 50]), jnp.array([2, 5, 47]), 100)
    np.testing.assert_array_equal(np.asarray(out), [2, 5, 47])
    # Close candidates move by F // 3 = 33 (1-based (c + 33) % 100).
    out = selfsup.shift_negative_start(jnp.array([0, 10, 80]), jnp.array([1, 10, 79]), 100)
    np.testing.assert_array_equal(np.asarray(out), [34, 43, 12])


class ClipFrameIndicesTest(parameterized.TestCase):

  @parameterized.parameters((16, 4, True), (16, 4, False), (5, 1, False), (7, 3, True))
  def test_matches_official_reading_order(self, length, stride, jit):
    f, s, _ = _all_cases(40)
    fn = jax.jit(selfsup.clip_frame_indices, static_argnums=(2, 3)) if jit else (
        selfsup.clip_frame_indices)
    out = np.asarray(fn(s, f, length, stride))
    self.assertEqual(out.shape, (s.size, length))
    ref = np.array([np.array(ref_frames_1based(int(a) + 1, int(n), length, stride)) - 1
                    for a, n in zip(s, f)])
    np.testing.assert_array_equal(out, ref)
    self.assertTrue(np.all((out >= 0) & (out < f[:, None])))

  def test_scalar_start(self):
    out = selfsup.clip_frame_indices(7, 10, 5, 2)
    np.testing.assert_array_equal(np.asarray(out), [7, 9, 0, 2, 4])

  def test_static_arguments(self):
    with self.assertRaisesRegex(ValueError, ">= 1"):
      selfsup.clip_frame_indices(0, 10, 0, 2)
    with self.assertRaisesRegex(ValueError, "Python int"):
      selfsup.clip_frame_indices(0, 10, 4, 1.5)


class SampleClipStartTest(absltest.TestCase):

  def test_official_range(self):
    # _sample_indices: randint(1, max(F - L * stride, 0) + 1), i.e. 0-based {0..max(F - L s, 0)}.
    num_frames = jnp.array([100, 64, 30, 70])
    starts = jax.vmap(lambda k: selfsup.sample_clip_start(k, num_frames, 16, 4))(
        jax.random.split(jax.random.key(0), 4000))
    starts = np.asarray(starts)
    self.assertEqual(starts.dtype, np.int32)
    for col, high in enumerate([36, 0, 0, 6]):
      self.assertEqual(starts[:, col].min(), 0)
      self.assertEqual(starts[:, col].max(), high)
    self.assertLen(np.unique(starts[:, 0]), 37)


class IntraVideoNegativeTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_gathers_the_shifted_clip(self, jit):
    rng = np.random.default_rng(0)
    num_frames = np.array([30, 12, 20], np.int32)
    videos = rng.normal(size=(3, 30, 4, 5, 2)).astype(np.float32)
    start = np.array([3, 0, 10], np.int32)
    candidate = np.array([4, 7, 1], np.int32)  # close, far, far
    length, stride = 6, 4
    fn = lambda v, s, c, n: selfsup.intra_video_negative(v, s, c, length, stride, num_frames=n)
    out = (jax.jit(fn) if jit else fn)(jnp.asarray(videos), start, candidate, num_frames)
    self.assertEqual(out.shape, (3, length, 4, 5, 2))
    self.assertEqual(out.dtype, jnp.float32)
    for b in range(3):
      neg = ref_negative_start_1based(start[b] + 1, candidate[b] + 1, int(num_frames[b]))
      frames = np.array(ref_frames_1based(neg, int(num_frames[b]), length, stride)) - 1
      np.testing.assert_array_equal(np.asarray(out[b]), videos[b, frames])
      self.assertTrue(np.all(frames < num_frames[b]))  # never reads the padding

  def test_float64_and_default_frame_count(self):
    with jax.enable_x64(True):
      videos = np.random.default_rng(1).normal(size=(2, 9, 3))
      out = selfsup.intra_video_negative(jnp.asarray(videos), jnp.array([0, 4]),
                                         jnp.array([1, 0]), 4, 2)
      self.assertEqual(out.dtype, jnp.float64)
      for b, (s, c) in enumerate([(0, 1), (4, 0)]):
        neg = ref_negative_start_1based(s + 1, c + 1, 9)
        np.testing.assert_array_equal(np.asarray(out[b]),
                                      videos[b, np.array(ref_frames_1based(neg, 9, 4, 2)) - 1])

  def test_gradient_reaches_the_read_frames(self):
    videos = jnp.zeros((1, 6, 2))
    grad = jax.grad(lambda v: jnp.sum(selfsup.intra_video_negative(v, 0, 4, 4, 2)))(videos)
    # Start 4 of 6 frames with stride 2 reads frames 4, 0, 2, 4.
    np.testing.assert_array_equal(np.asarray(grad[0, :, 0]), [1, 0, 1, 0, 2, 0])

  def test_bad_videos(self):
    with self.assertRaisesRegex(ValueError, "B, F"):
      selfsup.intra_video_negative(jnp.zeros(5), 0, 1, 2, 1)


if __name__ == "__main__":
  absltest.main()
