"""A procedural face dataset: cluttered scenes with one labelled face, generated from a seed.

Nothing is shipped or downloaded: example ``i`` of a config is drawn from
``np.random.default_rng([config.seed, i])`` alone, so any example can be made on its own (random
access, sharding across processes) and two runs with the same config see the same pixels.

Each example is a scene (default 256 x 256 RGB) with gradient, texture, random shapes and
distractor blobs (some skin-coloured), and one drawn face: head outline with shading, hair, two
eyes with irises, eyebrows, nose, mouth, under an in-plane rotation of up to +-15 degrees, a random
scale and position. Labels follow Adience (8 age groups, 2 genders: 0 = male, 1 = female) and
AffectNet's first seven expressions (``EXPRESSIONS``).

The labels are carried by graded, noisy cues drawn from a latent value per label (classes
overlap, so a classifier has something to learn but cannot be perfect), and the cues sit on the
face, mostly around the eyes and mouth where the fixation map is high:

* age (latent t in [0, 1]): children have rounder heads, larger eyes set lower and a shorter lower
  face, rosy cheeks and fuller lips; adults get forehead lines, crow's feet at the outer eye
  corners, eye bags, nose-to-mouth folds, thinner lips and greying hair (some older people keep
  dark hair, some younger ones are grey);
* gender: jaw width (the lower half of the head outline is squarer for men), eyebrow thickness,
  eyelash line, lipstick (often for women), stubble around the mouth (for some adult men), and
  hair length and hairline (mostly long for women, short and receding with age for men);
  cues are weaker for young children;
* expression: mouth corners up or down, mouth opening and width (teeth for happy), eyebrow
  height and angle (inner ends up for sad and fear, down for anger), eye opening (wide for
  surprise and fear, narrowed for disgust and anger, squinted for happy), nose wrinkles and a
  one-sided lip raise for disgust; each example has a random intensity.

The skin tone, hair colour, lighting direction, clothing, clutter and camera effects (gain,
blur, noise) are independent of the labels: they are nuisance for a classifier, and the clutter
makes a whole-scene classifier worse than one that looks at the face crop.

The fixation map is a fixation-style density: Gaussians on both eyes (weight 1), the mouth centre
(0.5) and the nose tip (0.4), with a width proportional to the face size, scaled to peak at 255.
Landmarks are the drawn eye centres, nose tip and mouth corners in ``LANDMARK_NAMES`` order; the
box is the axis-aligned bound of the head outline (forehead to chin, cheek to cheek, no hair).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterator

import cv2
import numpy as np

AGE_GROUPS = ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")  # Adience
GENDERS = ("male", "female")
EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")  # AffectNet

# Fixation Gaussians: weights and width (in head half-heights).
# Eyes dominate, as in human fixations on faces; the mouth and nose weights sum to less than an
# eye's, so the peak stays on an eye even where the mouth and nose Gaussians overlap.
FIXATION_WEIGHTS = {"eye": 1.0, "mouth": 0.5, "nose": 0.4}
FIXATION_SIGMA = 0.12

# Expression prototypes: mouth curvature (+ corners up), mouth opening, mouth width factor,
# brow angle (+ inner ends up), brow raise, eye opening factor; in AffectNet order.
_EXPRESSION_PARAMS = np.array([
    # curve  open  width  brow_ang  brow_up  eye_open
    [0.0, 0.0, 1.0, 0.0, 0.0, 1.0],  # Neutral
    [0.9, 0.35, 1.25, 0.0, 0.1, 0.75],  # Happy
    [-0.8, 0.0, 0.9, 0.9, 0.1, 0.8],  # Sad
    [0.0, 1.0, 0.7, 0.0, 1.0, 1.4],  # Surprise
    [-0.4, 0.55, 1.2, 0.8, 0.6, 1.35],  # Fear
    [-0.4, 0.15, 0.95, -0.5, -0.3, 0.6],  # Disgust
    [-0.3, 0.0, 0.85, -1.0, -0.6, 0.85],  # Anger
], np.float64)
# Per-parameter spread around the prototype, so neighbouring expressions overlap.
_EXPRESSION_NOISE = np.array([0.12, 0.06, 0.06, 0.14, 0.14, 0.06])

_HAIR_COLOURS = np.array([[30, 25, 22], [70, 45, 30], [120, 80, 45], [195, 160, 100],
                          [150, 70, 35]], np.float64)
_GREY_HAIR = np.array([205, 205, 200], np.float64)
_SKIN_DARK = np.array([85, 55, 40], np.float64)
_SKIN_LIGHT = np.array([245, 210, 185], np.float64)

_SHIFT = 4  # sub-pixel bits for cv2 drawing, so small features move smoothly with the pose
_AA = cv2.LINE_AA


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What to generate.

  Attributes:
    image_size: scene (height, width) in pixels.
    num_age_groups: number of age classes (Adience has 8).
    num_genders: number of gender classes (2).
    num_expressions: number of expression classes, a prefix of ``EXPRESSIONS``.
    face_size: range of the face height as a fraction of the shorter scene side.
    clutter: background clutter level (0 = plain gradient, 1 = default, 2 = busy).
    noise: standard deviation of the per-pixel sensor noise, in 8-bit levels.
    label_noise: probability that each stored label is replaced by a different random class
      (the cues still follow the true class).
    seed: dataset seed; example i comes from ``np.random.default_rng([seed, i])``.
  """
  image_size: tuple[int, int] = (256, 256)
  num_age_groups: int = 8
  num_genders: int = 2
  num_expressions: int = 7
  face_size: tuple[float, float] = (0.25, 0.6)
  clutter: float = 1.0
  noise: float = 4.0
  label_noise: float = 0.0
  seed: int = 0

  def __post_init__(self):
    h, w = self.image_size
    if h < 32 or w < 32:
      raise ValueError(f"image_size must be at least 32 x 32, got {self.image_size}")
    lo, hi = self.face_size
    if not 0.05 <= lo <= hi <= 0.85:
      raise ValueError(f"face_size must satisfy 0.05 <= lo <= hi <= 0.85, got {self.face_size}")
    if self.num_age_groups < 2 or self.num_genders != 2:
      raise ValueError("need num_age_groups >= 2 and num_genders == 2")
    if not 2 <= self.num_expressions <= len(EXPRESSIONS):
      raise ValueError(f"num_expressions must be in [2, {len(EXPRESSIONS)}]")
    if not 0.0 <= self.label_noise < 1.0 or self.clutter < 0 or self.noise < 0:
      raise ValueError("need 0 <= label_noise < 1, clutter >= 0 and noise >= 0")
    if self.seed < 0:
      raise ValueError(f"seed must be non-negative, got {self.seed}")


@functools.lru_cache(maxsize=4)
def _noise_tiles(h: int, w: int, std: float) -> tuple[np.ndarray, np.ndarray]:
  """A fixed Gaussian noise field twice the scene size, split into its positive and negative parts.

  Examples take random windows of it: drawing 3 x H x W normals per example would cost more than
  the rest of the scene, and two saturating uint8 adds are far cheaper than float arithmetic.
  """
  noise = np.random.default_rng(20240611).standard_normal((2 * h, 2 * w, 3)) * std
  noise = np.clip(np.round(noise), -255, 255)
  return np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _bezier_weights(n: int) -> np.ndarray:
  """(n, 3) weights of the start, control and end points of a quadratic Bezier."""
  t = np.linspace(0, 1, n)[:, None]
  return np.concatenate([(1 - t)**2, 2 * t * (1 - t), t**2], 1)


@functools.lru_cache(maxsize=64)
def _unit_circle(n: int) -> np.ndarray:
  a = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([np.cos(a), np.sin(a)], -1)


def _colour(c) -> tuple[int, int, int]:
  r, g, b = c
  return (min(max(int(r), 0), 255), min(max(int(g), 0), 255), min(max(int(b), 0), 255))


def _quad(p0, pm, p2, n: int = 10) -> np.ndarray:
  """Quadratic Bezier from p0 to p2 that passes through pm at its middle."""
  (x0, y0), (xm, ym), (x2, y2) = p0, pm, p2
  ctrl = np.array([[x0, y0], [2 * xm - (x0 + x2) / 2, 2 * ym - (y0 + y2) / 2], [x2, y2]])
  return _bezier_weights(n) @ ctrl


def _ellipse(cx, cy, rx, ry, n: int = 24) -> np.ndarray:
  return _unit_circle(n) * (rx, ry) + (cx, cy)


class _Painter:
  """Draws shapes given in the face frame (head centre at 0, half-height 1, y down) on the scene."""

  def __init__(self, image: np.ndarray, centre: np.ndarray, radius: float, angle: float):
    self.image = image
    self.radius = radius
    c, s = math.cos(angle), math.sin(angle)
    self.linear_t = radius * np.array([[c, s], [-s, c]])  # transposed, for row vectors
    self.centre = np.asarray(centre, np.float64)
    # The same map in cv2's fixed-point units, with +0.5 so that truncation rounds.
    self._fixed_t = self.linear_t * (1 << _SHIFT)
    self._fixed_c = self.centre * (1 << _SHIFT) + 0.5

  def to_scene(self, pts) -> np.ndarray:
    return np.asarray(pts, np.float64) @ self.linear_t + self.centre

  def _fixed(self, pts) -> np.ndarray:
    # floor, not truncation toward zero, for points left of or above the scene
    return np.floor(np.asarray(pts, np.float64) @ self._fixed_t + self._fixed_c).astype(np.int32)

  def fill(self, pts, colour) -> None:
    cv2.fillPoly(self.image, [self._fixed(pts)], _colour(colour), _AA, _SHIFT)

  def line(self, pts, colour, width: float, closed: bool = False) -> None:
    thickness = max(1, int(width * self.radius + 0.5))
    cv2.polylines(self.image, [self._fixed(pts)], closed, _colour(colour), thickness, _AA,
                  _SHIFT)


def _flip_label(rng: np.random.Generator, label: int, n: int, rate: float) -> int:
  # Both draws happen whatever the rate, so the rest of the example does not depend on it.
  flip, other = rng.random(), int(rng.integers(n - 1))
  if flip < rate:
    return other if other < label else other + 1
  return label


def _background(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
  h, w = config.image_size
  # Gradient plus low-frequency texture, built on a coarse grid and upsampled (cheap at any size).
  cells = int(rng.integers(3, 12))
  c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  a = rng.uniform(0, 2 * np.pi)
  grid = np.linspace(0, 1, cells)
  ramp = math.cos(a) * grid[None, :] + math.sin(a) * grid[:, None]
  ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
  small = c0 + (c1 - c0) * ramp[..., None]
  small += rng.uniform(-1, 1, (cells, cells, 3)) * (25.0 * config.clutter)
  small = np.clip(small, 0, 255).astype(np.uint8)
  # Cubic to a 32-cell grid, then linear: one cubic upsampling from a few cells is slow in OpenCV.
  small = cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC)
  img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
  side = min(h, w)
  for _ in range(rng.poisson(10 * config.clutter)):
    kind = int(rng.integers(5))
    colour = _colour(rng.uniform(0, 255, 3))
    thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    size = side * rng.uniform(0.03, 0.25)
    if kind == 0:
      cv2.rectangle(img, (int(cx - size), int(cy - size * rng.uniform(0.3, 1.5))),
                    (int(cx + size), int(cy + size)), colour, thick, _AA)
    elif kind == 1:
      cv2.circle(img, (int(cx), int(cy)), int(size), colour, thick, _AA)
    elif kind == 2:
      cv2.line(img, (int(cx), int(cy)), (int(rng.uniform(0, w)), int(rng.uniform(0, h))), colour,
               int(rng.integers(1, 5)), _AA)
    elif kind == 3:
      cv2.ellipse(img, (int(cx), int(cy)), (int(size), int(size * rng.uniform(0.2, 1))),
                  float(rng.uniform(0, 180)), 0, 360, colour, thick, _AA)
    else:
      pts = np.array([cx, cy]) + rng.uniform(-size, size, (int(rng.integers(3, 7)), 2))
      cv2.fillPoly(img, [pts.astype(np.int32)], colour, _AA)
  # Distractor blobs, half of them skin-coloured, so colour alone does not find the face.
  for _ in range(rng.poisson(2.5 * config.clutter)):
    if rng.random() < 0.5:
      colour = _SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * rng.random() + rng.normal(0, 8, 3)
    else:
      colour = rng.uniform(0, 255, 3)
    size = side * rng.uniform(0.05, 0.2)
    cv2.ellipse(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                (int(size * rng.uniform(0.6, 0.9)), int(size)), float(rng.uniform(-30, 30)), 0,
                360, _colour(colour), -1, _AA)
  return img


def _head_outline(aspect: float, jaw: float, n: int = 48) -> np.ndarray:
  """Head outline: ellipse on top, a superellipse below whose exponent (jaw) squares the jaw."""
  a = np.linspace(0, 2 * np.pi, n, endpoint=False)
  c, s = np.cos(a), np.sin(a)
  lower = s > 0
  expo = np.where(lower, 2.0 / (2.0 + jaw * s), 1.0)  # the jaw squares off toward the chin
  x = aspect * np.sign(c) * np.abs(c)**expo
  return np.stack([x, s], -1)


def _draw_face(img: np.ndarray, rng: np.random.Generator, config: SyntheticConfig, age: int,
               gender: int, expression: int) -> dict[str, Any]:
  """Draws the face in place; returns box, landmarks, mouth centre (pixels) and head radius."""
  h, w = config.image_size
  # Latent values: graded, so adjacent classes overlap.
  t = np.clip((age + rng.uniform(-0.5, 0.5)) / (config.num_age_groups - 1) + rng.normal(0, 0.04),
              0, 1)
  child = max(0.0, 0.35 - t) / 0.35  # 1 for babies, 0 from the teens on
  dimorph = 1.0 - 0.6 * child  # young children show weaker gender cues
  male = 1.0 - gender
  fem = float(np.clip(0.5 + (gender - 0.5) * dimorph + rng.normal(0, 0.15), 0, 1))

  params = _EXPRESSION_PARAMS[expression]
  intensity = rng.uniform(0.8, 1.25)
  curve, mopen, mwidth, brow_ang, brow_up, eye_open = (
      _EXPRESSION_PARAMS[0] + intensity * (params - _EXPRESSION_PARAMS[0]) +
      rng.normal(0, 1, 6) * _EXPRESSION_NOISE)
  mopen = max(mopen, 0.0)
  eye_open = float(np.clip(eye_open, 0.3, 1.7))

  # Geometry in the face frame (head half-height 1).
  aspect = 0.86 - 0.12 * t + 0.05 * child + 0.04 * (1 - fem) + rng.normal(0, 0.03)
  jaw = max(0.0, 1.3 * (1 - fem) * dimorph + rng.normal(0, 0.25))
  eye_y = 0.03 + 0.2 * child + rng.normal(0, 0.02)
  eye_x = aspect * (0.42 + rng.normal(0, 0.02))
  eye_w = 0.14 * (1 + 0.4 * child) * (1 + rng.normal(0, 0.06))
  nose_y = eye_y + (0.36 - 0.1 * child) * (1 + rng.normal(0, 0.05))
  mouth_y = nose_y + max(0.24 - 0.04 * child + rng.normal(0, 0.02), 0.15)
  mouth_w = 0.24 * mwidth * (1 + rng.normal(0, 0.06))
  lip_t = 0.06 * (1.25 - 0.55 * t) * (0.8 + 0.3 * fem)

  outline = _head_outline(aspect, jaw)
  # Pose: size, rotation and a position that keeps the head box inside the scene.
  radius = 0.5 * min(h, w) * rng.uniform(*config.face_size)
  angle = math.radians(rng.uniform(-15, 15))
  cs, sn = math.cos(angle), math.sin(angle)
  rot = radius * np.array([[cs, -sn], [sn, cs]])
  ext = outline @ rot.T
  lo, hi = ext.min(0), ext.max(0)
  centre = np.array([rng.uniform(-lo[0], w - hi[0]), rng.uniform(-lo[1], h - hi[1])])
  p = _Painter(img, centre, radius, angle)

  # Colours (nuisance, independent of the labels).
  skin = _SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * rng.random() + rng.normal(0, 7, 3)
  hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 10, 3)
  grey = float(np.clip(2.2 * (t - 0.5) + rng.normal(0, 0.2), 0, 1))
  if rng.random() < 0.15:  # dyed hair: some greying is hidden
    grey *= 0.2
  hair_c = hair + grey * (_GREY_HAIR - hair)
  brow_c = hair + 0.5 * grey * (_GREY_HAIR - hair)
  brow_c = brow_c * 0.8
  shade = skin * 0.72
  light = rng.normal(0, 1, 2)
  light /= np.linalg.norm(light) + 1e-9

  # Body: neck and shoulders below the head, clipped by the scene.
  shirt = rng.uniform(0, 255, 3)
  p.fill([[-2.0, 1.6], [-0.8, 1.15], [0.8, 1.15], [2.0, 1.6], [2.4, 4.0], [-2.4, 4.0]], shirt)
  p.fill([[-0.35 * aspect * 1.2, 0.5], [0.35 * aspect * 1.2, 0.5], [0.4, 1.35], [-0.4, 1.35]],
         shade)

  # Hair behind the head: long hair reaches the shoulders, short hair stops above the ears.
  long_hair = rng.random() < (0.85 if fem > 0.5 else 0.1)
  bottom = rng.uniform(0.9, 1.9) if long_hair else rng.uniform(-0.35, 0.05)
  arc = np.linspace(np.pi, 2 * np.pi, 20)  # left, over the top, to the right
  back = np.stack([aspect * 1.14 * np.cos(arc), -0.05 + 1.1 * np.sin(arc)], -1)
  if long_hair:
    spread = aspect * 1.14 * rng.uniform(1.0, 1.25)
    back = np.concatenate([back, [[spread, bottom], [-spread, bottom]]])
  else:
    # Short hair: the arc down to just above the ears, closed across the head (covered by it).
    drop = np.linspace(0, math.asin(min(max((bottom + 0.05) / 1.1, -1), 1)), 4)
    side = np.stack([aspect * 1.14 * np.cos(drop), -0.05 + 1.1 * np.sin(drop)], -1)
    back = np.concatenate([back, side, side[::-1] * [-1, 1]])
  p.fill(back, hair_c)

  # Head with shading: filled, then multiplied by a lit sphere inside the head mask.
  p.fill(outline, skin)
  scene_outline = p.to_scene(outline)
  x0, y0 = np.floor(scene_outline.min(0)).astype(int)
  x1, y1 = np.ceil(scene_outline.max(0)).astype(int) + 1
  x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
  mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
  cv2.fillPoly(mask, [p._fixed(outline) - [x0 << _SHIFT, y0 << _SHIFT]], 255, _AA, _SHIFT)
  # The lit-sphere gain is separable in x and y; it is applied as 8-bit fixed point (x / 128).
  xs = (np.arange(x0, x1, dtype=np.float32) - np.float32(centre[0])) / np.float32(radius)
  ys = (np.arange(y0, y1, dtype=np.float32) - np.float32(centre[1])) / np.float32(radius)
  fx = ((0.16 * light[0]) * xs - 0.12 * xs**2) * np.float32(128 / 255)
  fy = ((0.16 * light[1]) * ys - 0.12 * ys**2) * np.float32(128 / 255)
  gain = ((fy[:, None] + fx[None]) * mask + 128.5).astype(np.uint8)
  img[y0:y1, x0:x1] = cv2.multiply(img[y0:y1, x0:x1], cv2.merge([gain, gain, gain]),
                                   scale=1 / 128)

  # Hairline: a fringe over the top of the head; men's recedes with age.
  hairline = -0.55 - 0.25 * male * max(0.0, t - 0.45) * dimorph + rng.normal(0, 0.06)
  if long_hair:
    hairline += rng.uniform(0, 0.15)
  top = outline[outline[:, 1] < hairline]
  if len(top) >= 3:
    top = top[np.argsort(np.arctan2(top[:, 1], top[:, 0]))]
    wave = np.stack([np.linspace(top[-1, 0], top[0, 0], 7),
                     hairline + rng.uniform(0, 0.08, 7)], -1)
    p.fill(np.concatenate([top, wave]) * 1.02, hair_c)

  # Cheeks: rosy in children.
  if child > 0:
    blush = skin + child * 0.35 * (np.array([235, 120, 120]) - skin)
    for sgn in (-1, 1):
      p.fill(_ellipse(sgn * eye_x * 1.05, nose_y + 0.06, 0.13, 0.09, 16), blush)

  # Age lines: forehead, crow's feet, eye bags, nose-to-mouth folds.
  line_c = skin * (0.78 - 0.15 * t)
  n_fore = int(np.clip(round(9 * (t - 0.45) + rng.normal(0, 0.8)), 0, 4))
  for k in range(n_fore):
    y = eye_y - 0.38 - 0.08 * k
    if y > hairline + 0.05:
      p.line(_quad([-0.35, y + 0.02], [0, y - 0.03], [0.35, y + 0.02], 8), line_c, 0.015)
  fold = float(np.clip(2.0 * (t - 0.45) + rng.normal(0, 0.15), 0, 1))
  for sgn in (-1, 1):
    cx = sgn * eye_x
    outer = cx + sgn * eye_w
    if fold > 0.2:
      for k in (-1, 0, 1):
        p.line([[outer + sgn * 0.03, eye_y + 0.03 * k],
                [outer + sgn * (0.05 + 0.07 * fold), eye_y + 0.07 * k]], line_c, 0.012)
      p.line(_quad([cx - 0.08, eye_y + 0.1], [cx, eye_y + 0.13 + 0.03 * fold],
                   [cx + 0.08, eye_y + 0.1], 6), line_c, 0.012)
      p.line(_quad([sgn * 0.14, nose_y - 0.02], [sgn * (0.2 + 0.03 * fold), mouth_y - 0.05],
                   [sgn * (mouth_w + 0.06), mouth_y + 0.05], 8), line_c, 0.015)

  # Stubble around the mouth for some adult men.
  if gender == 0 and t > 0.35 and rng.random() < 0.45:
    beard = skin + rng.uniform(0.25, 0.5) * (hair * 0.6 - skin)
    area = outline[outline[:, 1] > nose_y + 0.08]
    area = np.concatenate([area[area[:, 0] >= 0][np.argsort(area[area[:, 0] >= 0][:, 1])],
                           area[area[:, 0] < 0][np.argsort(-area[area[:, 0] < 0][:, 1])]])
    if len(area) >= 3:
      p.fill(area * 0.97, beard)
    p.fill(_ellipse(0, mouth_y - 0.01, mouth_w + 0.08, 0.1, 20), beard)

  # Eyes: lens-shaped white, iris and pupil, upper lid line (heavier lashes for women).
  eye_h = eye_w * 0.55 * eye_open
  iris_c = _HAIR_COLOURS[rng.integers(3)] * rng.uniform(0.6, 1.2)
  gaze = rng.normal(0, 0.2, 2) * eye_w
  lid_w = 0.018 + 0.022 * fem * dimorph
  eyes = []
  for sgn in (-1, 1):
    cx = sgn * eye_x
    inner, outer = [cx - sgn * eye_w, eye_y], [cx + sgn * eye_w, eye_y]
    upper = _quad(inner, [cx, eye_y - eye_h], outer, 9)
    lower = _quad(outer, [cx, eye_y + 0.8 * eye_h], inner, 9)
    p.fill(np.concatenate([upper, lower]), [238, 236, 230])
    ir = eye_w * 0.5
    p.fill(_ellipse(cx + gaze[0], eye_y + gaze[1] * 0.3, ir, min(ir, 0.9 * eye_h), 16), iris_c)
    p.fill(_ellipse(cx + gaze[0], eye_y + gaze[1] * 0.3, ir * 0.45, min(ir, 0.9 * eye_h) * 0.45,
                    12), [15, 12, 12])
    p.line(upper, [35, 25, 25], lid_w)
    p.line(lower, shade, 0.012)
    eyes.append([cx, eye_y])
    # Eyebrow: height and angle carry the expression, thickness the gender.
    by = eye_y - 0.2 - 0.2 * brow_up
    brow = _quad([sgn * 0.09, by - 0.13 * brow_ang], [cx, by - 0.05 - 0.06 * brow_ang],
                 [cx + sgn * eye_w * 1.25, by + 0.02 + 0.06 * brow_ang], 8)
    p.line(brow, brow_c, (0.035 + 0.045 * (1 - fem) * dimorph) * (1 + rng.normal(0, 0.1)))
  if brow_ang < -0.4:  # frown lines between the brows
    for sgn in (-1, 1):
      p.line([[sgn * 0.04, eye_y - 0.24], [sgn * 0.05, eye_y - 0.12]], line_c, 0.012)

  # Nose: nostrils and the curve of the base; the tip is the landmark.
  nose_tip = np.array([0.0, nose_y])
  p.line(_quad([-0.05, eye_y + 0.08], [-0.07, nose_y - 0.15], [-0.09, nose_y - 0.06], 6),
         shade, 0.014)
  p.line(_quad([-0.13, nose_y - 0.02], [0, nose_y + 0.05], [0.13, nose_y - 0.02], 8), shade,
         0.02)
  for sgn in (-1, 1):
    p.fill(_ellipse(sgn * 0.06, nose_y + 0.01, 0.035, 0.02, 10), skin * 0.4)
  if expression == 5:  # disgust wrinkles the nose
    for k in range(2):
      y = eye_y + 0.12 + 0.05 * k
      p.line([[-0.07, y], [0.07, y - 0.01]], line_c, 0.012)

  # Mouth: corners raised by the curvature (one side more for disgust), opened by mopen.
  raise_l = raise_r = 0.26 * curve
  if expression == 5:
    if rng.random() < 0.5:
      raise_l += 0.06 * intensity
    else:
      raise_r += 0.06 * intensity
  # Even a broad smile keeps the corners below the nostrils.
  top = mouth_y - nose_y - 0.07
  raise_l, raise_r = min(raise_l, top), min(raise_r, top)
  left = np.array([-mouth_w, mouth_y - raise_l])
  right = np.array([mouth_w, mouth_y - raise_r])
  mid_y = mouth_y + 0.04 * curve
  gap = 0.45 * mopen
  in_up = _quad(left, [0, mid_y - gap / 2], right, 12)
  in_lo = _quad(right, [0, mid_y + gap / 2], left, 12)
  out_up = _quad(left, [0, mid_y - gap / 2 - lip_t], right, 12)
  out_lo = _quad(right, [0, mid_y + gap / 2 + 1.3 * lip_t], left, 12)
  lipstick = rng.random() < 0.6 * fem * dimorph
  lip_c = (np.array([175, 45, 60]) * rng.uniform(0.8, 1.1) if lipstick else
           skin * 0.82 + np.array([25, -5, -5]))
  p.fill(np.concatenate([out_up, out_lo]), lip_c)
  if gap * radius > 0.8:
    p.fill(np.concatenate([in_up, in_lo]), [60, 20, 25])
    if curve > 0.3:  # a smile shows the upper teeth
      teeth = _quad(right, [0, mid_y - gap / 2 + 0.5 * gap], left, 12)
      p.fill(np.concatenate([in_up, teeth]), [240, 238, 228])
  p.line(in_up, lip_c * 0.55, 0.012)

  # Scene coordinates of everything the caller records.
  landmarks = p.to_scene(np.stack([eyes[0], eyes[1], nose_tip, left, right]))
  mouth_centre = p.to_scene([[0, mid_y]])[0]
  box = np.concatenate([scene_outline.min(0), scene_outline.max(0)])
  return {"box": box, "landmarks": landmarks, "mouth": mouth_centre, "radius": radius}


def _fixation_map(h: int, w: int, landmarks: np.ndarray, mouth: np.ndarray,
                  radius: float) -> np.ndarray:
  sigma = FIXATION_SIGMA * radius
  centres = [(landmarks[0], FIXATION_WEIGHTS["eye"]), (landmarks[1], FIXATION_WEIGHTS["eye"]),
             (landmarks[2], FIXATION_WEIGHTS["nose"]), (mouth, FIXATION_WEIGHTS["mouth"])]
  xy = np.array([c for c, _ in centres], np.float32)
  weights = np.array([wt for _, wt in centres], np.float32)
  # Separable Gaussians: the sum of outer products is one (H, 4) @ (4, W) product.
  gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32)[None] - xy[:, :1]) / sigma)**2)
  gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32)[None] - xy[:, 1:]) / sigma)**2)
  fix = gy.T @ (weights[:, None] * gx)
  return np.round(fix * (255.0 / max(float(fix.max()), 1e-6))).astype(np.uint8)


def generate_example(index: int, config: SyntheticConfig = SyntheticConfig()) -> dict[str, Any]:
  """Example ``index`` of the dataset, a function of (config, index) only.

  Returns:
    dict with "image" (H, W, 3) uint8 RGB, "box" float32 [x1, y1, x2, y2], "landmarks" float32
    (5, 2) in ``LANDMARK_NAMES`` order, "age", "gender", "expression" ints, "fixation" (H, W)
    uint8 and "id" str.
  """
  if index < 0:
    raise ValueError(f"index must be non-negative, got {index}")
  rng = np.random.default_rng([config.seed, index])
  h, w = config.image_size
  age = int(rng.integers(config.num_age_groups))
  gender = int(rng.integers(config.num_genders))
  expression = int(rng.integers(config.num_expressions))

  img = _background(rng, config)
  face = _draw_face(img, rng, config, age, gender, expression)

  # Camera: blur, per-channel gain, offset and sensor noise (a window of a fixed noise field).
  sigma = rng.uniform(0, 1.2)
  if sigma > 0.4:
    img = cv2.GaussianBlur(img, (0, 0), sigma)
  gain = rng.uniform(0.85, 1.15, 3)
  offset = rng.uniform(-12, 12, 3)
  oy, ox = int(rng.integers(h)), int(rng.integers(w))
  levels = np.arange(256, dtype=np.float64)[:, None]
  lut = np.clip(np.round(levels * gain + offset), 0, 255).astype(np.uint8)
  img = cv2.LUT(img, lut.reshape(256, 1, 3))
  if config.noise > 0:
    pos, neg = _noise_tiles(h, w, float(config.noise))
    img = cv2.subtract(cv2.add(img, pos[oy:oy + h, ox:ox + w]), neg[oy:oy + h, ox:ox + w])

  # Stored labels: possibly flipped, after all the drawing, so the cues follow the true class.
  labels = [_flip_label(rng, y, n, config.label_noise)
            for y, n in ((age, config.num_age_groups), (gender, config.num_genders),
                         (expression, config.num_expressions))]
  return {
      "image": img,
      "box": face["box"].astype(np.float32),
      "landmarks": face["landmarks"].astype(np.float32),
      "age": labels[0],
      "gender": labels[1],
      "expression": labels[2],
      "fixation": _fixation_map(h, w, face["landmarks"], face["mouth"], face["radius"]),
      "id": f"synthetic/{index:06d}",
  }


def generate(n: int, config: SyntheticConfig = SyntheticConfig(),
             start: int = 0) -> Iterator[dict[str, Any]]:
  """Examples ``start .. start + n - 1``."""
  for i in range(start, start + n):
    yield generate_example(i, config)


def encode_example(example: dict[str, Any]) -> dict[str, Any]:
  """The example with the image as JPEG (quality 95) and the fixation map as PNG bytes."""
  ok_img, jpg = cv2.imencode(".jpg", cv2.cvtColor(example["image"], cv2.COLOR_RGB2BGR),
                             [cv2.IMWRITE_JPEG_QUALITY, 95])
  ok_fix, png = cv2.imencode(".png", example["fixation"])
  if not (ok_img and ok_fix):
    raise RuntimeError(f"could not encode {example['id']}")
  out = dict(example)
  out["image"] = jpg.tobytes()
  out["fixation"] = png.tobytes()
  return out

