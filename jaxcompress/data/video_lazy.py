"""Lazily decoded videos: array-likes of (F, H, W, C) uint8 frames that decode on indexing.

A real video set is too large to decode whole for every clip: DSM (Wang et al., "Enhancing
Unsupervised Video Representation Learning by Decoupling the Scene and the Motion", arXiv
2009.05757) reads 16 frames 4 apart from videos of hundreds of frames, and its official loader
(`FingerRec/DSM-decoupling-scene-motion`, `src/data/dataset.py`, `DataSet.get`) opens only the
JPEG files of those frames. The classes here give the clip transforms of `data.video` the same
economy: `video[indices]` decodes the requested frames (each distinct frame once) and returns
`(len(indices), H, W, C)` uint8, `len(video)` is the frame count, and `video.shape` comes from
one frame header. `np.asarray(video)` still works (it decodes every frame).

* `FrameFiles`: one JPEG/PNG file per frame in a folder, named by a template
  (`img_{:05d}.jpg`, ...); a missing frame file falls back to the first frame, as the official
  `_load_image` does.
* `EncodedFrames`: in-memory encoded frames (TFDS stores a video as one JPEG per frame).
* `VideoFile`: a video file decoded with PyAV (optional dependency, imported on first use).

Frames are RGB (`PIL.Image.convert("RGB")`, as the official loader). With `short_side`, every
frame is resized like the official `video_transform.Resize(size)` on PIL clips
(`src/augment/video_transformations/functional.py`, `resize_clip`): bilinear, short side to
`size`, long side `int(size * long / short)`, unchanged when the short side already has it.
"""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxcompress.errors import DatasetNotFoundError


def resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) after the official short-side resize (`get_resize_sizes`: truncation)."""
  if not short_side or min(height, width) == short_side:
    return height, width
  if width < height:
    return int(short_side * height / width), short_side
  return short_side, int(short_side * width / height)


def _to_array(image: Image.Image, short_side: int | None) -> np.ndarray:
  if image.mode != "RGB":
    image = image.convert("RGB")
  h, w = resized_size(image.height, image.width, short_side)
  if (h, w) != (image.height, image.width):
    image = image.resize((w, h), Image.BILINEAR)
  return np.asarray(image, dtype=np.uint8)


class LazyVideo:
  """Base class: `len`, `shape`, and `video[int | slice | int array]` decoding on demand.

  Subclasses implement `_images(indices)` (sorted distinct frame indices -> PIL images) and
  `_frame_hw()` (the stored frame size, read without decoding when the format allows).
  """
  ndim = 4
  dtype = np.dtype(np.uint8)

  def __init__(self, num_frames: int, short_side: int | None = None):
    if num_frames < 1:
      raise DatasetNotFoundError(f"{self!r} has no frames; check the video and its list entry.")
    self._num_frames, self.short_side = int(num_frames), short_side
    self._hw: tuple[int, int] | None = None

  def __len__(self) -> int:
    return self._num_frames

  @property
  def shape(self) -> tuple[int, int, int, int]:
    if self._hw is None:
      self._hw = resized_size(*self._frame_hw(), self.short_side)
    return (self._num_frames, *self._hw, 3)

  def _images(self, indices: Sequence[int]) -> list[Image.Image]:
    raise NotImplementedError

  def _frame_hw(self) -> tuple[int, int]:
    return self._images([0])[0].size[::-1]

  def _indices(self, key: Any) -> np.ndarray:
    if isinstance(key, slice):
      return np.arange(self._num_frames)[key]
    idx = np.asarray(key)
    if idx.dtype == bool:
      idx = np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
      raise IndexError(f"Index a video with an int, a slice or a 1-D int array, got {key!r}.")
    if idx.size and (idx.min() < -self._num_frames or idx.max() >= self._num_frames):
      raise IndexError(f"Frame index out of range for a video of {self._num_frames} frames: "
                       f"{idx.tolist()}.")
    return np.where(idx < 0, idx + self._num_frames, idx)

  def __getitem__(self, key: Any) -> np.ndarray:
    if isinstance(key, (int, np.integer)):
      return self[np.asarray([key])][0]
    idx = self._indices(key)
    if not idx.size:
      return np.zeros((0, *self.shape[1:]), np.uint8)
    # A short video's clip repeats frames (the reading restarts at frame 0): decode each once.
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = np.stack([_to_array(im, self.short_side)
                       for im in self._images([int(i) for i in unique])])
    if self._hw is None:
      self._hw = frames.shape[1:3]
    return frames[inverse]

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    frames = self[np.arange(self._num_frames)]
    return frames if dtype is None else frames.astype(dtype)


class FrameFiles(LazyVideo):
  """A frame folder: frame i (0-based) is `folder/template.format(i + first_index)`.

  Args:
    folder: the video's frame folder.
    template: file name template (official UCF101 `frame{:06d}.jpg`, HMDB51 / Kinetics
      `img_{:05d}.jpg`; `image_{:05d}.jpg` from the official ffmpeg extraction script).
    num_frames: frames the video exposes.
    first_index: number of the first frame file (1 for ffmpeg / the official lists).
    short_side: optional short-side resize.
  """

  def __init__(self, folder: str, template: str, num_frames: int, first_index: int = 1,
               short_side: int | None = None):
    self.folder, self.template, self.first_index = folder, template, first_index
    super().__init__(num_frames, short_side)

  def __repr__(self) -> str:
    return f"FrameFiles({self.folder!r}, {self.template!r})"

  def path(self, index: int) -> str:
    return os.path.join(self.folder, self.template.format(index + self.first_index))

  def _open(self, index: int) -> Image.Image:
    try:
      image = Image.open(self.path(index))
    except FileNotFoundError:
      # Official `_load_image`: a frame the list promises but the folder lacks reads frame 1.
      try:
        image = Image.open(self.path(0))
      except FileNotFoundError:
        raise DatasetNotFoundError(
            f"Frame folder {self.folder} has no {self.template.format(self.first_index)} (nor "
            f"{self.template.format(index + self.first_index)}); check the frame extraction "
            f"and config.data.source_kwargs.image_tmpl.") from None
    return image

  def _images(self, indices: Sequence[int]) -> list[Image.Image]:
    out = []
    for i in indices:
      with self._open(i) as image:
        out.append(image.convert("RGB"))
    return out

  def _frame_hw(self) -> tuple[int, int]:
    with self._open(0) as image:  # the header only: PIL decodes on first pixel access
      return image.height, image.width


class EncodedFrames(LazyVideo):
  """Frames held encoded (JPEG/PNG bytes, one per frame), decoded when indexed."""

  def __init__(self, frames: Sequence[bytes], short_side: int | None = None):
    self._frames = list(frames)
    super().__init__(len(self._frames), short_side)

  def __repr__(self) -> str:
    return f"EncodedFrames({len(self._frames)} frames)"

  def _images(self, indices: Sequence[int]) -> list[Image.Image]:
    out = []
    for i in indices:
      with Image.open(io.BytesIO(self._frames[i])) as image:
        out.append(image.convert("RGB"))
    return out

  def _frame_hw(self) -> tuple[int, int]:
    with Image.open(io.BytesIO(self._frames[0])) as image:
      return image.height, image.width


def _import_av() -> Any:
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError:
    raise DatasetNotFoundError(
        "Reading video files needs PyAV, which is not installed: pip install av (or extract "
        "frame folders and list '<folder> <num frames> <label>' rows instead).") from None
  return av


class VideoFile(LazyVideo):
  """A video file decoded with PyAV from its start up to the last requested frame.

  The frame count is the container's (`stream.frames`) or, when the container does not store
  it, the number of decoded frames. A requested frame past the last decodable one reads frame
  0, as a missing frame file does in the official folder loader.

  Args:
    path: the video file.
    short_side: optional short-side resize.
    num_frames: the frame count when known (skips opening the file to count).
  """

  def __init__(self, path: str, short_side: int | None = None, num_frames: int | None = None):
    self.path = path
    if not os.path.isfile(path):
      raise DatasetNotFoundError(f"Video file {path} not found; check the list file's paths and "
                                 f"config.data.source_kwargs.root.")
    super().__init__(num_frames or self._count(), short_side)

  def __repr__(self) -> str:
    return f"VideoFile({self.path!r})"

  def _count(self) -> int:
    with _import_av().open(self.path) as container:
      stream = container.streams.video[0]
      if stream.frames:
        return int(stream.frames)
      return sum(1 for _ in container.decode(stream))

  def _images(self, indices: Sequence[int]) -> list[Image.Image]:
    wanted, found, first = set(indices), {}, None
    with _import_av().open(self.path) as container:
      for i, frame in enumerate(container.decode(container.streams.video[0])):
        if i == 0 or i in wanted:
          image = frame.to_image()
          first = image if i == 0 else first
          if i in wanted:
            found[i] = image
        if i >= indices[-1]:
          break
    if first is None:
      raise DatasetNotFoundError(f"Video file {self.path} has no decodable frame.")
    return [found.get(i, first) for i in indices]

  def _frame_hw(self) -> tuple[int, int]:
    with _import_av().open(self.path) as container:
      stream = container.streams.video[0]
      return stream.codec_context.height, stream.codec_context.width
