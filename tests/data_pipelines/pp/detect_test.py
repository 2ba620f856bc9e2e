"""The ``detect`` op: boxes from the Haar detector on a real LFW photo, stored boxes kept, no face
skipped and counted by the loader, landmarks copied when a detector gives them, pickling."""

import pickle

import cv2
import numpy as np
import pytest
from skimage import data

from data_pipelines.pp import face
from data_pipelines import loader
from data_pipelines import pp
from jaxface import faces
from jaxface.faces.types import Face
from tests.helpers import lfw_photo


@pytest.fixture(scope="module")
def photo():
  return lfw_photo(data.lfw_subset()[0])  # 160x160: the face fills the central 100x100


def _jpeg(rgb: np.ndarray) -> bytes:
  ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  assert ok
  return buf.tobytes()


def test_registered_through_the_plugin_table():
  (op,) = pp.parse("detect")
  assert isinstance(op, face.Detect)
  assert str(op) == "detect(detector='haar', keep_stored=True, select='largest')"


def test_haar_box_on_a_real_photo(photo):
  out = pp.Pipeline("detect")({"image": photo, "id": "lfw0"})
  (expected,) = faces.HaarDetector().detect(photo)
  assert out["box"].dtype == np.float32 and out["box"].shape == (4,)
  np.testing.assert_array_equal(out["box"], expected.box)
  # The face was upscaled into rows and columns 30..129 of the photo.
  x1, y1, x2, y2 = out["box"]
  assert 20 < x1 < 50 and 20 < y1 < 50 and 110 < x2 < 140 and 110 < y2 < 140
  assert "landmarks" not in out  # Haar gives boxes only


def test_detect_then_crop_from_encoded_bytes(photo):
  pipe = pp.Pipeline("decode|detect|face_crop(0.3)|resize(64)")
  out = pipe({"image": _jpeg(photo), "id": "lfw0"}, np.random.default_rng(0))
  assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
  # The crop's box is the detection mapped into the crop: the 30 % margin leaves 64 / 1.3 px.
  x1, y1, x2, y2 = out["box"]
  assert x2 - x1 == pytest.approx(64 / 1.3, abs=0.5) and y2 - y1 == pytest.approx(64 / 1.3, abs=0.5)


def test_stored_box_is_kept_unless_asked(photo):
  stored = np.array([10, 10, 60, 60], np.float32)
  lm = np.full((5, 2), 30, np.float32)
  example = {"image": photo, "box": stored, "landmarks": lm, "id": "lfw0"}
  out = pp.Pipeline("detect")(example)
  np.testing.assert_array_equal(out["box"], stored)
  np.testing.assert_array_equal(out["landmarks"], lm)
  out = pp.Pipeline("detect(keep_stored=False)")(example)
  assert out["box"][0] > 20 and "landmarks" not in out  # stale landmarks are dropped
  np.testing.assert_array_equal(example["box"], stored)  # the input is not modified


def test_blank_image_is_a_bad_example():
  with pytest.raises(pp.BadExampleError, match="detect: haar found no face") as e:
    pp.Pipeline("detect")({"image": np.full((120, 160, 3), 128, np.uint8), "id": "blank"})
  assert e.value.id == "blank"


def test_loader_skips_and_counts_photos_without_a_face(photo):
  source = [{"image": _jpeg(photo), "id": "lfw0", "age": 1},
            {"image": _jpeg(np.full((160, 160, 3), 128, np.uint8)), "id": "blank", "age": 2}]
  ld = loader.make_eval_loader(source, pipe="decode|detect|face_crop(0.3)|resize(64)",
                               batch_size=2, shard_index=0, shard_count=1, label_keys=("age",))
  (batch,) = list(ld)
  ld.close()
  assert batch["mask"].tolist() == [True, False] and batch["id"][0] == "lfw0"
  assert ld.skipped.to_dict() == {
      "count": 1, "examples": [{"id": "blank", "reason": "detect: haar found no face"}]}


class _TwoFaces:
  """A stand-in detector with landmarks (MTCNN's output format) for the selection and copy rules;
  the real MTCNN takes many seconds to compile on a CPU and has its own tests."""

  name = "fake"

  def detect(self, image_rgb):
    small = Face(np.array([0, 0, 10, 10], np.float32), 0.99, np.ones((5, 2), np.float32))
    big = Face(np.array([50, 50, 100, 100], np.float32), 0.9, np.full((5, 2), 2, np.float32))
    return [small, big]


def test_landmarks_copied_and_selection(monkeypatch, photo):
  monkeypatch.setattr(faces, "get_detector", lambda name: _TwoFaces())
  largest = pp.Pipeline("detect('mtcnn')")({"image": photo})
  np.testing.assert_array_equal(largest["box"], [50, 50, 100, 100])
  assert largest["landmarks"].dtype == np.float32 and (largest["landmarks"] == 2).all()
  best = pp.Pipeline("detect('mtcnn', select='score')")({"image": photo})
  np.testing.assert_array_equal(best["box"], [0, 0, 10, 10])
  assert (best["landmarks"] == 1).all()


def test_pickles_without_its_detector(photo):
  op = face.Detect()
  op({"image": photo})  # builds the cascade, which cannot be pickled
  clone = pickle.loads(pickle.dumps(op))
  assert clone == op and clone._detector is None
  np.testing.assert_array_equal(clone({"image": photo})["box"], op({"image": photo})["box"])


def test_bad_arguments():
  with pytest.raises(ValueError, match="detect: detector must be one of mtcnn, haar, got 'dlib'"):
    pp.Pipeline("detect('dlib')")
  with pytest.raises(ValueError, match="detect: select must be one of largest, central, score"):
    pp.Pipeline("detect(select='all')")
  with pytest.raises(ValueError, match="detect: keep_stored must be True or False"):
    pp.Pipeline("detect(keep_stored=1)")
  with pytest.raises(ValueError, match="put decode first"):
    pp.Pipeline("detect")({"image": b"jpeg bytes"})
