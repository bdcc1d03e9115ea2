"""Offline scene-biased videos: a square moving in one of four directions over a scene.

The toy check of scene bias in DSM (Wang et al., arXiv 2009.05757): the action class is the
motion direction of a bright square (right, left, down, up, wrapping around the frame; its
speed, 0 to `SPEED` pixels per frame, is redrawn every `SPEED_PERIOD` frames, so the motion
changes over time within a video), and each video also has one of four scenes (backgrounds of
distinct colour and texture). In the training split the scene agrees with the class with
probability `scene_bias` (0.9 by default; otherwise a uniform scene), so a network can score
well in training from the background alone; in the test split the scene is uniform and
independent of the class, so only a representation of the motion transfers. Apart from the
scene's texture phase, nothing static tells two videos apart (one square colour, noise drawn
per frame): recognising a video means recognising how its square moves.

Each example `{"video": (F, H, W, 3) uint8, "label": direction, "scene": scene}` is generated on
demand from `(seed, split, index)`: nothing is downloaded or stored.
"""
from __future__ import annotations

import numpy as np

from jaxcompress.data import sources
from jaxcompress.data import video as video_lib
from jaxcompress.errors import ConfigError

NUM_CLASSES = 4
# (row, column) velocity of each class: right, left, down, up.
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))
SPEED = 3
SPEED_PERIOD = 4
# Scene colours (RGB, two tones each) and textures: horizontal stripes, vertical stripes,
# checkerboard, diagonal stripes.
SCENE_COLOURS = (((150, 40, 40), (90, 20, 20)), ((40, 140, 50), (20, 80, 30)),
                 ((40, 60, 160), (20, 30, 90)), ((150, 140, 40), (90, 80, 20)))
STRIPE_PERIOD = 6
SQUARE_LEVEL = 235
NOISE = 6.0
_SPLIT_IDS = {"train": 0, "test": 1}
DEFAULT_SIZES = {"train": 512, "test": 256}


def _scene(scene: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """(size, size, 3) float background of `scene` with a random texture phase."""
  r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  phase = int(rng.integers(0, STRIPE_PERIOD))
  coord = (r, c, (r // (STRIPE_PERIOD // 2)) + (c // (STRIPE_PERIOD // 2)), r + c)[scene]
  period = 2 if scene == 2 else STRIPE_PERIOD
  light = ((coord + phase) % period) < period / 2
  tones = np.asarray(SCENE_COLOURS[scene], np.float32)
  return np.where(light[..., None], tones[0], tones[1])


def render(label: int, scene: int, num_frames: int, size: int, square: int,
           rng: np.random.Generator) -> np.ndarray:
  """One video: the scene, and a square of side `square` moving in direction `label`.

  Returns:
    (num_frames, size, size, 3) uint8.
  """
  background = _scene(scene, size, rng)
  top, left = rng.integers(0, size, size=2)
  colour = np.full(3, SQUARE_LEVEL, np.float32)
  dr, dc = DIRECTIONS[label]
  offsets = np.arange(square)
  frames = np.repeat(background[None], num_frames, axis=0)
  # Speed 0..SPEED px per step, redrawn every SPEED_PERIOD frames: clips of one video at other
  # times move differently (the motion varies in time, the scene does not).
  speeds = np.repeat(rng.integers(0, SPEED + 1, size=-(-num_frames // SPEED_PERIOD)),
                     SPEED_PERIOD)[:num_frames]
  travelled = np.concatenate([[0], np.cumsum(speeds[:-1])])
  for t in range(num_frames):
    rows = (top + dr * travelled[t] + offsets) % size
    cols = (left + dc * travelled[t] + offsets) % size
    frames[t][np.ix_(rows, cols)] = colour
  # Sensor noise drawn per frame: no fixed per-video pattern to recognise a video by.
  frames = frames + rng.normal(0.0, NOISE, frames.shape)
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


class MovingSquares:
  """The scene-biased moving-square videos of one split (see the module docstring).

  Attributes:
    num_classes: 4 directions.
    labels: (N,) directions; `scenes`: (N,) scene of each video.
  """
  num_classes = NUM_CLASSES

  def __init__(self, split: str, num_videos: int, num_frames: int, size: int, square: int,
               scene_bias: float, seed: int):
    if split not in _SPLIT_IDS:
      raise ConfigError(f"moving_squares has splits 'train' and 'test', got {split!r}.")
    if not 0.0 <= scene_bias <= 1.0:
      raise ConfigError(f"scene_bias is a probability, got {scene_bias}.")
    if not 0 < square < size:
      raise ConfigError(f"The square ({square} px) must be smaller than the frame ({size} px).")
    self.split_id, self.seed = _SPLIT_IDS[split], seed
    self.num_frames, self.size, self.square = num_frames, size, square
    rng = np.random.default_rng([seed, self.split_id, 0])
    self.labels = rng.integers(0, NUM_CLASSES, size=num_videos)
    uniform = rng.integers(0, NUM_CLASSES, size=num_videos)
    if split == "train":
      biased = rng.random(num_videos) < scene_bias
      self.scenes = np.where(biased, self.labels, uniform)
    else:
      self.scenes = uniform

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, object]:
    index = int(index)
    rng = np.random.default_rng([self.seed, self.split_id, 1, index])
    video = render(int(self.labels[index]), int(self.scenes[index]), self.num_frames,
                   self.size, self.square, rng)
    return {"video": video, "label": int(self.labels[index]),
            "scene": int(self.scenes[index])}


def moving_squares(split: str, num_videos: int | None = None, num_frames: int = 16,
                   size: int = 32, square: int = 8, scene_bias: float = 0.9, seed: int = 0,
                   clips_per_video: int = 0, clip_len: int = 8, stride: int = 1):
  """The registered source "moving_squares" (`config.data.source_kwargs` holds the options).

  Args:
    split: "train" (scene agrees with the class with probability `scene_bias`) or "test"
      (independent scene).
    num_videos: videos in the split (default 512 train, 256 test).
    num_frames, size, square: frames per video, frame side and square side in pixels.
    scene_bias: probability that a training video's scene equals its class.
    seed: generation seed (train and test differ by split).
    clips_per_video: > 0 repeats every video with that many evenly spaced `clip_len` x
      `stride` clips (`video.MultiClipSource`, for video-level evaluation).
    clip_len, stride: the clips of `clips_per_video`.

  Returns:
    A random-access source of `{"video", "label", "scene"}` examples.
  """
  source = MovingSquares(split, num_videos or DEFAULT_SIZES.get(split, 256), num_frames, size,
                         square, scene_bias, seed)
  if clips_per_video:
    return video_lib.MultiClipSource(source, clips_per_video, clip_len, stride)
  return source


sources.register("moving_squares", moving_squares)
