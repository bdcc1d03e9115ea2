"""Offline synthetic person re-identification: procedural people seen by styled cameras.

The toy data of the CPU-sized checks of MEB-Net (Zhai et al., arXiv 2007.01546: synthetic
identities as 64x32 patterns, 6 cameras with colour shifts, source and target styles) and DDAN
(Chen et al., arXiv 2007.13249: several source styles, unseen target styles). Nothing is
downloaded: every image is rendered from (seed, domain, split, index).

  * An identity is a person-like figure with a fixed appearance: skin and hair colours, hair
    length, a top with a colour, a second colour and a pattern (solid, horizontal or vertical
    stripes, checks, a chest band) and sleeves, trousers or shorts, shoes, and maybe a backpack
    or a hand bag (`appearance`).
  * Every image varies the pose: position, scale, stride of the legs and a mirror (`render`).
  * A domain (a "dataset") has a style: a colour cast, brightness, contrast, blur, sensor noise
    and a background of its own colour and texture (`domain_style`); its cameras deviate from
    it by their own colour shift, brightness and light direction (`camera_style`).

Sources:
  * "synthetic_reid": one domain (`domain`: "source" = 0, "target" = 1, or any index >= 0).
    "train" holds `num_ids` persons (labels 0..num_ids-1) with `images_per_id` images spread over
    the cameras; "query" / "gallery" hold `num_test_ids` other persons (labels num_ids..), each
    with `query_per_id` queries and `gallery_per_id` gallery images, the gallery images taken by
    cameras other than the queries' while there are enough cameras. Examples are
    `{"image": uint8 (H, W, 3), "label", "camera", "domain"}`.
  * "synthetic_reid_dg": the generalisation setting; "train" concatenates the train splits of
    domains 0..num_sources-1 (identity offsets and domain labels, `reid_dg.DGSource`), "query" /
    "gallery" are those of the unseen domain num_sources + `target`.

Each split is rendered once per process and held in memory as uint8 arrays.
"""
from __future__ import annotations

import colorsys
import functools
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from jaxcompress.data import reid_dg, sources
from jaxcompress.errors import ConfigError

DOMAINS = {"source": 0, "target": 1}
GOLDEN = 0.6180339887
SKIN = ((0.96, 0.80, 0.69), (0.87, 0.67, 0.53), (0.71, 0.51, 0.36), (0.45, 0.31, 0.21))
HAIR = ((0.08, 0.06, 0.05), (0.35, 0.22, 0.12), (0.80, 0.65, 0.35), (0.6, 0.6, 0.6))
TOP_PATTERNS = ("solid", "h_stripes", "v_stripes", "checks", "band")
# Person layout as fractions of the person's height (head top 0, feet 1).
HEAD_CENTRE, HEAD_RADIUS = 0.085, 0.075
TORSO, LEGS, SHOES = (0.16, 0.52), (0.52, 0.95), (0.95, 1.0)
SHORTS_END = 0.70


def _colour(rng: np.random.Generator, sat: tuple[float, float] = (0.35, 1.0),
            val: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
  return np.asarray(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def appearance(seed: int, domain: int, person: int) -> dict[str, Any]:
  """The fixed look of one person of one domain (the same in every image of the person)."""
  rng = np.random.default_rng([seed, domain, 7, person])
  return {"skin": np.asarray(SKIN[rng.integers(len(SKIN))]),
          "hair": np.asarray(HAIR[rng.integers(len(HAIR))]), "long_hair": rng.random() < 0.35,
          "top": _colour(rng), "top2": _colour(rng), "pattern": int(rng.integers(5)),
          "period": int(rng.integers(2, 5)), "long_sleeves": rng.random() < 0.5,
          "bottom": _colour(rng, val=(0.15, 0.8)), "shorts": rng.random() < 0.25,
          "shoes": _colour(rng, sat=(0.0, 0.5), val=(0.05, 0.9)),
          "bag": int(rng.integers(3)), "bag_colour": _colour(rng),
          "width": rng.uniform(0.42, 0.62)}


def domain_style(domain: int, strength: float = 1.0) -> dict[str, Any]:
  """A domain's photometric style. The fields step through their ranges by golden-ratio
  fractions of the domain index, so no two domains share a cast or a blur; `strength` 0 gives
  every domain the same neutral style (grey plain background, no cast, no blur).

  Returns:
    cast (3,) channel gains, brightness, contrast, blur (sigma in pixels at height 64), noise
    (sigma on [0, 1]), background (3,) colour, texture (0 plain, 1 vertical stripes, 2 tiles,
    3 horizontal bands).
  """
  d, s = int(domain), float(strength)
  theta = 2.0 * np.pi * GOLDEN * d
  cast = 1.0 + 0.25 * s * np.cos(theta - np.asarray([0.0, 2.0944, 4.1888]))
  frac = lambda a: (a * d + 0.1) % 1.0  # noqa: E731  (a spread over [0, 1) per domain)
  background = np.asarray(colorsys.hsv_to_rgb(frac(0.37), s * (0.15 + 0.35 * frac(0.71)),
                                              0.55 + s * 0.4 * (frac(0.53) - 0.5)))
  return {"cast": cast, "brightness": 1.0 + 0.3 * s * np.cos(1.3 * d + 1.0),
          "contrast": 1.0 + 0.25 * s * np.sin(2.1 * d), "blur": 1.6 * s * ((GOLDEN * d) % 1.0),
          "noise": 0.01 + 0.03 * s * frac(0.414), "background": background,
          "texture": d % 4 if s > 0 else 0}


def camera_style(seed: int, domain: int, camera: int, strength: float = 1.0) -> dict[str, Any]:
  """A camera's deviation from its domain: colour gains, brightness, light gradient."""
  rng = np.random.default_rng([seed, domain, 11, camera])
  s = float(strength)
  return {"cast": 1.0 + s * rng.uniform(-0.18, 0.18, 3),
          "brightness": 1.0 + s * rng.uniform(-0.22, 0.22),
          "gradient": s * rng.uniform(-0.35, 0.35),
          "background_tint": s * rng.uniform(-0.1, 0.1, 3)}


def _background(height: int, width: int, dom: dict[str, Any], cam: dict[str, Any],
                rng: np.random.Generator) -> np.ndarray:
  yy, xx = np.mgrid[0:height, 0:width]
  base = np.clip(dom["background"] + cam["background_tint"], 0.0, 1.0)
  period = max(2, height // 8)
  phase = int(rng.integers(period))
  texture = (np.zeros_like(yy, dtype=bool), (xx + phase) // (period // 2 or 1) % 2 == 0,
             ((yy + phase) // period + (xx + phase) // period) % 2 == 0,
             (yy + phase) // period % 2 == 0)[dom["texture"]]
  image = base * (1.0 + 0.12 * np.where(texture, 1.0, -1.0))[..., None]
  floor = yy >= int(0.8 * height)
  return np.where(floor[..., None], image * 0.75, image)


def render(look: dict[str, Any], height: int, width: int, rng: np.random.Generator,
           background: np.ndarray) -> np.ndarray:
  """The person `look` in a random pose over `background`, as float (height, width, 3) in [0, 1]
  before any style."""
  scale = rng.uniform(0.88, 1.0)
  ph = 0.92 * scale * height
  top = (0.04 + rng.uniform(-0.03, 0.03)) * height + (1.0 - scale) * 0.5 * height
  cx = (0.5 + rng.uniform(-0.08, 0.08)) * width
  stride = rng.uniform(0.0, 0.08) * width
  mirror = rng.random() < 0.5
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
  if mirror:
    xx = 2.0 * cx - xx
  v = (yy - top) / ph  # 0 at the head top, 1 at the feet
  image = background.copy()

  def paint(mask, colour):
    image[mask] = colour

  half = look["width"] * width * 0.5 * scale
  arm = 0.08 * width * scale
  in_rows = lambda rows: (v >= rows[0]) & (v < rows[1])  # noqa: E731
  torso = in_rows(TORSO) & (np.abs(xx - cx) < half)
  arms = in_rows((TORSO[0] + 0.01, TORSO[1] - 0.02)) & (np.abs(xx - cx) >= half) & (
      np.abs(xx - cx) < half + arm)
  paint(arms, look["top"] if look["long_sleeves"] else look["skin"])
  paint(arms & (v < TORSO[0] + 0.09), look["top"])
  r, c = (yy - (top + TORSO[0] * ph)).astype(int), (xx - (cx - half)).astype(int)
  p = look["period"] * max(1, height // 32)
  second = (np.zeros_like(torso), (r // p) % 2 == 1, (c // p) % 2 == 1,
            (r // p + c // p) % 2 == 1,
            in_rows((TORSO[0] + 0.12, TORSO[0] + 0.22)))[look["pattern"]]
  paint(torso, look["top"])
  paint(torso & second, look["top2"])
  leg_half = 0.42 * half
  gap = 0.03 * width + stride
  for side in (-1.0, 1.0):
    centre = cx + side * (0.5 * gap + leg_half)
    leg = np.abs(xx - centre) < leg_half
    paint(leg & in_rows(LEGS), look["bottom"])
    if look["shorts"]:
      paint(leg & in_rows((SHORTS_END, LEGS[1])), look["skin"])
    paint(leg & in_rows(SHOES), look["shoes"])
  head_c, head_r = top + HEAD_CENTRE * ph, HEAD_RADIUS * ph
  head = ((yy - head_c) / head_r) ** 2 + ((xx - cx) / (0.8 * head_r)) ** 2 <= 1.0
  paint(head, look["skin"])
  hair = head & (yy < head_c - 0.3 * head_r)
  if look["long_hair"]:
    hair |= in_rows((HEAD_CENTRE, TORSO[0] + 0.1)) & (np.abs(xx - cx) < 0.8 * head_r) & (
        np.abs(xx - cx) > 0.45 * head_r)
  paint(hair, look["hair"])
  if look["bag"] == 1:  # backpack straps and pack on one side
    paint(in_rows((TORSO[0] + 0.04, TORSO[0] + 0.26)) & (xx - cx > half - 0.5 * arm) & (
        xx - cx < half + 1.5 * arm), look["bag_colour"])
  elif look["bag"] == 2:  # hand bag by the hip
    paint(in_rows((TORSO[1] - 0.04, TORSO[1] + 0.08)) & (cx - xx > half) & (
        cx - xx < half + 2.2 * arm), look["bag_colour"])
  return image


def stylise(image: np.ndarray, dom: dict[str, Any], cam: dict[str, Any],
            rng: np.random.Generator) -> np.ndarray:
  """The domain and camera style on a rendered image: cast, illumination with a horizontal light
  gradient, contrast, blur, noise; uint8 out."""
  height, width = image.shape[:2]
  light = 1.0 + cam["gradient"] * (np.arange(width) / max(width - 1, 1) - 0.5)
  gain = dom["brightness"] * cam["brightness"] * rng.uniform(0.94, 1.06)
  x = image * (dom["cast"] * cam["cast"]) * gain * light[None, :, None]
  x = (x - x.mean()) * dom["contrast"] + x.mean()
  sigma = dom["blur"] * height / 64.0
  if sigma > 0.05:
    x = ndimage.gaussian_filter(x, (sigma, sigma, 0.0), mode="nearest")
  x = x + rng.normal(0.0, dom["noise"], x.shape)
  return np.round(255.0 * np.clip(x, 0.0, 1.0)).astype(np.uint8)


def _cameras(split: str, num_persons: int, per_person: int, num_cameras: int,
             query_per_id: int, rng: np.random.Generator) -> np.ndarray:
  """(num_persons, per_person) camera of every image (module docstring)."""
  out = np.empty((num_persons, per_person), np.int64)
  for k in range(num_persons):
    if split == "train":
      out[k] = (rng.integers(num_cameras) + np.arange(per_person)) % num_cameras
    else:
      perm = rng.permutation(num_cameras)
      shift = 0 if split == "query" else query_per_id
      out[k] = perm[(shift + np.arange(per_person)) % num_cameras]
  return out


@functools.lru_cache(maxsize=16)
def _render_split(split: str, domain: int, num_ids: int, num_test_ids: int, per_person: int,
                  query_per_id: int, num_cameras: int, size: tuple[int, int], seed: int,
                  style_strength: float, camera_strength: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  first, count = (0, num_ids) if split == "train" else (num_ids, num_test_ids)
  # Query and gallery cameras come from the same per-person permutations.
  cam_rng = np.random.default_rng([seed, domain, 13, split == "train"])
  cams = _cameras(split, count, per_person, num_cameras, query_per_id, cam_rng)
  dom = domain_style(domain, style_strength)
  styles = [camera_style(seed, domain, c, camera_strength) for c in range(num_cameras)]
  split_code = ("train", "query", "gallery").index(split)
  images = np.empty((count * per_person, *size, 3), np.uint8)
  labels = np.repeat(np.arange(first, first + count), per_person)
  for k in range(count):
    look = appearance(seed, domain, first + k)
    for j in range(per_person):
      i = k * per_person + j
      rng = np.random.default_rng([seed, domain, split_code, i])
      cam = styles[cams[k, j]]
      plain = render(look, *size, rng, _background(*size, dom, cam, rng))
      images[i] = stylise(plain, dom, cam, rng)
  for array in (images, labels, cams):
    array.setflags(write=False)
  return images, labels, cams.reshape(-1)


class SyntheticReid:
  """One split of one synthetic domain (module docstring).

  Attributes:
    images: (N, H, W, 3) uint8; labels, cameras: (N,) int64; domain: the domain index.
    num_classes: num_ids for "train", None for query / gallery.
  """

  def __init__(self, split: str, domain: int, num_ids: int, images_per_id: int,
               num_test_ids: int, query_per_id: int, gallery_per_id: int, num_cameras: int,
               image_size: tuple[int, int], seed: int, style_strength: float,
               camera_strength: float):
    per_person = {"train": images_per_id, "query": query_per_id,
                  "gallery": gallery_per_id}[split]
    self.images, self.labels, self.cameras = _render_split(
        split, domain, num_ids, num_test_ids, per_person, query_per_id, num_cameras, image_size,
        seed, style_strength, camera_strength)
    self.domain = domain
    self.num_classes = num_ids if split == "train" else None

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {"image": self.images[index], "label": int(self.labels[index]),
            "camera": int(self.cameras[index]), "domain": self.domain}


def _domain_index(domain: int | str) -> int:
  if isinstance(domain, str):
    if domain not in DOMAINS:
      raise ConfigError(f"Synthetic re-ID domain {domain!r} is unknown: use 'source', "
                        "'target' or an index >= 0.")
    return DOMAINS[domain]
  if isinstance(domain, bool) or not isinstance(domain, (int, np.integer)) or domain < 0:
    raise ConfigError(f"Synthetic re-ID domain must be 'source', 'target' or an index >= 0, got "
                      f"{domain!r}.")
  return int(domain)


def synthetic_reid(split: str, domain: int | str = "source", num_ids: int = 100,
                   images_per_id: int = 8, num_test_ids: int = 100, query_per_id: int = 2,
                   gallery_per_id: int = 4, num_cameras: int = 6,
                   image_size: Sequence[int] = (64, 32), seed: int = 0,
                   style_strength: float = 1.0, camera_strength: float = 1.0) -> SyntheticReid:
  """The registered source "synthetic_reid" (options in `config.data.source_kwargs`).

  Args:
    split: "train", "query" or "gallery".
    domain: "source" (0), "target" (1) or a domain index.
    num_ids, images_per_id: training persons and images of each.
    num_test_ids, query_per_id, gallery_per_id: test persons, queries and gallery images of each.
    num_cameras: cameras of the domain (>= 2, more than query_per_id).
    image_size: (height, width), at least (16, 8).
    seed: identities, cameras and images (the domain styles depend on the domain only).
    style_strength: scale of the domain styles' departure from neutral (0: no domain shift).
    camera_strength: scale of the cameras' departure from their domain's style.

  Returns:
    A `SyntheticReid` source.
  """
  if split not in ("train", "query", "gallery"):
    raise ConfigError(f"synthetic_reid has splits 'train', 'query' and 'gallery', not {split!r}.")
  size = tuple(int(s) for s in image_size)
  counts = (num_ids, images_per_id, num_test_ids, query_per_id, gallery_per_id)
  if len(size) != 2 or size[0] < 16 or size[1] < 8 or min(counts) < 1:
    raise ConfigError(f"synthetic_reid needs image_size >= (16, 8) and positive counts, got "
                      f"image_size={image_size!r}, (num_ids, images_per_id, num_test_ids, "
                      f"query_per_id, gallery_per_id)={counts}.")
  if num_cameras < 2 or query_per_id >= num_cameras:
    raise ConfigError(f"synthetic_reid needs at least 2 cameras and more cameras than queries "
                      f"per person (gallery images from other cameras); got num_cameras="
                      f"{num_cameras}, query_per_id={query_per_id}.")
  return SyntheticReid(split, _domain_index(domain), int(num_ids), int(images_per_id),
                       int(num_test_ids), int(query_per_id), int(gallery_per_id),
                       int(num_cameras), size, int(seed), float(style_strength),
                       float(camera_strength))


def synthetic_reid_dg(split: str, num_sources: int = 5, target: int = 0, num_ids: int = 50,
                      image_size: Sequence[int] = (32, 16), **kwargs: Any) -> Any:
  """The registered source "synthetic_reid_dg": DDAN's toy generalisation setting (5 source
  styles of 50 persons at 32x16, unseen target styles).

  Args:
    split: "train" (domains 0..num_sources-1 concatenated) or "query" / "gallery" (domain
      num_sources + target).
    num_sources: source domains.
    target: the unseen domain, 0, 1, ...
    num_ids: training persons per source domain.
    image_size: (height, width).
    **kwargs: the other `synthetic_reid` options.

  Returns:
    A `reid_dg.DGSource` for "train", a `SyntheticReid` otherwise.
  """
  if num_sources < 1 or target < 0:
    raise ConfigError(f"synthetic_reid_dg needs num_sources >= 1 and target >= 0, got "
                      f"{num_sources} and {target}.")
  if split != "train":
    return synthetic_reid(split, num_sources + int(target), num_ids=num_ids,
                          image_size=image_size, **kwargs)
  parts = [synthetic_reid("train", d, num_ids=num_ids, image_size=image_size, **kwargs)
           for d in range(num_sources)]
  return reid_dg.DGSource(parts, [f"synthetic_{d}" for d in range(num_sources)], central=None)


sources.register("synthetic_reid", synthetic_reid)
sources.register("synthetic_reid_dg", synthetic_reid_dg)
