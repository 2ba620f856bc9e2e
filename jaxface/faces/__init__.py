"""Face module: detection, margin crops, five-point alignment, task-aware crops, face selection.

* Detectors turn an RGB uint8 (H, W, 3) photo into ``Face`` records (box [x1, y1, x2, y2], score,
  five landmarks or None): ``MTCNNDetector`` (facenet-pytorch's MTCNN run in JAX, with landmarks)
  and ``HaarDetector`` (OpenCV's frontal-face cascade, boxes only). ``get_detector(name, **kw)``
  builds either by name.
* ``read_image`` reads a file as RGB uint8 with one-line ``ImageReadError`` messages.
* ``crops``: ``margin_box`` + ``crop`` (SAF-BAGE / VEGAC 30 % margin with border replication),
  ``align`` (similarity to the ArcFace five-point template), ``task_crop`` (Zhang et al.'s schemes
  1-5) and ``select_faces`` (all / largest / central / score). Every crop also returns the 2x3
  affine from crop pixels to photo pixels.
* ``chips``: the pretrained models' own face chips (dlib's 5-point chip geometry, fer's box crop).
* Command line: ``python -m jaxface.faces detect IMAGE_OR_DIR --out DIR`` (see ``__main__``).
"""

from jaxface.faces.chips import dlib_chip, dlib_chip_affine, fer_crop  # noqa: F401
from jaxface.faces.crops import (ARCFACE_TEMPLATE_112, POLICIES, SCHEMES, align, apply_affine,
                                 crop, invert_affine, margin_box, select_faces, task_affine,
                                 task_crop, umeyama, warp)
from jaxface.faces.haar import HaarDetector
from jaxface.faces.image_io import ImageReadError, read_image, validate_rgb
from jaxface.faces.types import LANDMARK_NAMES, Detector, Face

DETECTORS = ("mtcnn", "haar")


def get_detector(name: str, **kwargs) -> Detector:
  """A detector by name ("mtcnn" or "haar"); keyword arguments go to its constructor."""
  if name == "haar":
    return HaarDetector(**kwargs)
  if name == "mtcnn":
    from jaxface.faces.mtcnn import MTCNNDetector  # imports JAX: only when asked for.
    return MTCNNDetector(**kwargs)
  raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def __getattr__(name):
  if name == "MTCNNDetector":
    from jaxface.faces.mtcnn import MTCNNDetector
    return MTCNNDetector
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCFACE_TEMPLATE_112", "DETECTORS", "Detector", "Face", "HaarDetector",
           "ImageReadError", "LANDMARK_NAMES", "MTCNNDetector", "POLICIES", "SCHEMES", "align",
           "apply_affine", "crop", "dlib_chip", "dlib_chip_affine", "fer_crop", "get_detector",
           "invert_affine", "margin_box", "read_image",
           "select_faces", "task_affine", "task_crop", "umeyama", "validate_rgb", "warp"]
