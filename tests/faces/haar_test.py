"""OpenCV Haar cascade detector: finds the astronaut, nothing in flat images, maps boxes back."""

import cv2
import numpy as np
import pytest
from skimage import data

from jaxface.faces import HaarDetector, get_detector
from tests.helpers import lfw_photo

# Eileen Collins' face in skimage's astronaut, annotated by eye: hairline to chin, ear to ear.
ASTRONAUT_FACE = np.array([180, 60, 272, 172])


def iou(a, b):
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector():
  return HaarDetector()


def test_finds_the_astronaut(detector):
  faces = detector.detect(data.astronaut())
  assert len(faces) == 1
  face = faces[0]
  assert iou(face.box, ASTRONAUT_FACE) > 0.5
  assert face.landmarks is None and face.score > 0
  assert face.box.dtype == np.float32 and face.box.shape == (4,)


def test_nothing_in_flat_or_tiny_images(detector):
  assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
  assert detector.detect(np.full((10, 10, 3), 128, np.uint8)) == []
  assert detector.detect(np.full((5, 200, 3), 128, np.uint8)) == []


def test_max_side_maps_boxes_back_to_the_photo():
  big = cv2.resize(data.astronaut(), (1536, 1536), interpolation=cv2.INTER_CUBIC)  # 3x
  faces = HaarDetector(max_side=512).detect(big)
  assert len(faces) == 1
  assert iou(faces[0].box, 3 * ASTRONAUT_FACE) > 0.5
  # The detection on the 512 px copy, with edges mapped by x_photo = (x_small + 0.5) * 3 - 0.5.
  copy = cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA)
  small = HaarDetector().detect(copy)[0]
  # The same detection on the same copy, mapped in float arithmetic (values < 1536): rounding far
  # below 1e-3 px, a fixed margin; a missing half-pixel shift is off by 1 px.
  np.testing.assert_allclose(faces[0].box, (small.box + 0.5) * 3 - 0.5, atol=1e-3)


def test_errors_are_clear(monkeypatch):
  with pytest.raises(FileNotFoundError, match="cascade 'no_such_cascade.xml' not found"):
    HaarDetector(cascade="no_such_cascade.xml")
  with pytest.raises(ValueError, match="image_rgb: expected dtype uint8"):
    HaarDetector().detect(np.zeros((50, 50, 3), np.float32))
  with pytest.raises(ValueError, match="unknown detector 'dlib'"):
    get_detector("dlib")
  assert get_detector("haar", min_neighbors=3).min_neighbors == 3
  # OpenCV 5 (as on some machines) has neither the cascade files nor the classifier.
  monkeypatch.delattr(cv2, "CascadeClassifier")
  with pytest.raises(ImportError, match="removed in OpenCV 5.*opencv-python-headless<5"):
    HaarDetector()


def test_lfw_subset_detection_rates():
  patches = data.lfw_subset()  # 100 faces, then 100 non-faces.
  det = HaarDetector()
  found = np.array([len(det.detect(lfw_photo(p))) > 0 for p in patches])
  # Measured with the default cascade and min_neighbors=5: 97 / 100 faces, 0 / 100 non-faces.
  assert found[:100].sum() == 97
  assert found[100:].sum() == 0
