"""jaxface's port of dlib's shape predictor against dlib's own outputs and on tiny predictors."""

import json
import os

import numpy as np
import pytest
import skimage.data

from jaxface.faces import chips, dlib_shape
from tests.helpers import lfw_photo

FIXTURE = os.path.join(os.path.dirname(__file__), "dlib_shape_fixture.json")


def _photo(name):
  if name == "astronaut":
    return np.ascontiguousarray(skimage.data.astronaut())
  return lfw_photo(skimage.data.lfw_subset()[int(name[3:])])


@pytest.mark.parametrize("face", json.load(open(FIXTURE))["faces"],
                         ids=lambda f: f"{f['photo']}-{f['rect_kind']}")
def test_shipped_predictor_gives_dlibs_points(face):
  # dlib returns its points rounded to integers, so the port's unrounded points lie within 0.5 px
  # of them; when the fixture was recorded each lay at least 0.011 px inside that bound (and the
  # rounded points were equal on 285 dlib-bin 20.0.1 runs: 95 faces of the astronaut and the LFW
  # subset, dlib's HOG rects and jittered ones). 1e-3 px of slack covers float rounding in
  # another BLAS's SVD without letting a point one pixel off through.
  ours = dlib_shape.load_5_point()(_photo(face["photo"]), face["rect"])
  assert ours.shape == (5, 2)
  np.testing.assert_array_less(np.abs(ours - np.array(face["points"], float)), 0.5 + 1e-3)


def _stump_predictor(thresh=0.0):
  """One level, one depth-1 tree: feature 0 at the rect's centre, feature 1 at its top-left."""
  return dlib_shape.ShapePredictor({
      "initial_shape": np.array([0.5, 0.5, 0.25, 0.25], np.float32),
      "splits": np.array([[[[0, 1]]]], np.int32),
      "thresh": np.array([[[thresh]]], np.float32),
      "leaf_values": np.array([[[[0.1, 0, 0, 0], [0, 0.2, 0, 0]]]], np.float32),
      "anchor_idx": np.array([[0, 0]], np.int32),
      "deltas": np.array([[[0, 0], [-0.5, -0.5]]], np.float32),
  })


def test_tree_walk_pixel_reading_and_output_mapping():
  sp = _stump_predictor(thresh=50.0)
  img = np.zeros((40, 60), np.uint8)
  rect = (10, 0, 30, 20)  # centre (20, 10), top-left (10, 0)
  img[10, 20] = 200  # f0 - f1 = 200 > 50: left leaf, x of point 0 += 0.1
  np.testing.assert_allclose(sp(img, rect), [[10 + 0.6 * 20, 10], [15, 5]], atol=1e-5)
  img[10, 20] = 40  # 40 > 50 fails: right leaf, y of point 0 += 0.2
  np.testing.assert_allclose(sp(img, rect), [[20, 0.7 * 20], [15, 5]], atol=1e-5)
  # the centre pixel outside the photo reads 0: 0 - f1 = -f1 > 50 fails
  np.testing.assert_allclose(sp(img, (-40, 0, -20, 20))[0], [-30, 0.7 * 20], atol=1e-5)


def test_rgb_intensity_is_dlibs_floored_channel_mean():
  rgb = np.array([[[255, 254, 0], [1, 1, 2]]], np.uint8)
  np.testing.assert_array_equal(dlib_shape.intensity(rgb), [[169, 1]])
  with pytest.raises(ValueError, match="shape"):
    dlib_shape.intensity(np.zeros((2, 2, 4), np.uint8))


def test_similarity_recovers_a_rotation_scale_shift():
  rng = np.random.default_rng(0)
  src = rng.normal(size=(5, 2))
  a = 0.4
  m = 1.7 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  sim = dlib_shape.similarity(src, src @ m.T + [3, -2])
  np.testing.assert_allclose(sim, np.concatenate([m, [[3], [-2]]], 1), atol=1e-12)


def test_round_points_rounds_halves_up():
  np.testing.assert_array_equal(dlib_shape.round_points([[0.5, -0.5], [1.49, 2.51]]),
                                [[1, 0], [1, 3]])


def test_dlib_rect_from_landmarks_and_box_by_hand():
  # Landmarks exactly at the mean template, scaled by 80 and shifted by (100, 50): the rectangle is
  # the frame's rectangle under the same similarity, rounded to dlib's integer pixels.
  lm = chips.MTCNN_IN_DLIB_FRAME * 80 + [100, 50]
  cx, cy, side = chips.DLIB_RECT_IN_MTCNN_FRAME
  c, half = np.array([100 + 80 * cx, 50 + 80 * cy]), 40 * side
  np.testing.assert_allclose(chips.dlib_rect(lm), np.round([*(c - half), *(c + half)]), atol=1e-9)
  dx, dy, side = chips.DLIB_RECT_FROM_MTCNN_BOX
  box = [10, 20, 110, 145]  # geometric-mean side sqrt(100 * 125)
  s = np.sqrt(100 * 125)
  c = np.array([60 + dx * s, 82.5 + dy * s])
  np.testing.assert_allclose(chips.dlib_rect_from_box(box),
                             np.round([*(c - side * s / 2), *(c + side * s / 2)]), atol=1e-9)


def test_astronaut_points_from_mtcnn_match_dlibs_from_its_hog_rect():
  from jaxface.faces.mtcnn import MTCNNDetector  # pylint: disable=g-import-not-at-top
  img = _photo("astronaut")
  face = MTCNNDetector().detect(img)[0]
  pts = chips.dlib_points(img, face.landmarks)
  dlib_pts = np.array(json.load(open(FIXTURE))["faces"][0]["points"], float)
  # dlib's own points from its HOG rectangle, against the port run in the rectangle placed from
  # MTCNN's landmarks: the same face points to within 2 px on this 90 px face (measured: equal).
  assert np.abs(pts - dlib_pts).max() <= 2
  chip, A = chips.dlib_chip(img, face.landmarks, 64)
  chip2, A2 = chips.dlib_chip(img, pts, 64, template=chips.DLIB_TEMPLATE_5)
  np.testing.assert_array_equal(A, A2)
  np.testing.assert_array_equal(chip, chip2)


def test_dlib_points_need_five_landmarks_or_a_rect():
  with pytest.raises(ValueError, match=r"\(5, 2\) landmarks or a rect, got None"):
    chips.dlib_points(np.zeros((10, 10, 3), np.uint8))
  with pytest.raises(ValueError, match=r"got \(4, 2\)"):
    chips.dlib_points(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)))
