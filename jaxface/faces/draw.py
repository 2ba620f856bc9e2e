"""Drawing detected faces on a photo (the annotated images of ``faces detect`` and ``predict``)."""

from __future__ import annotations

import cv2
import numpy as np

from jaxface.faces.types import Face


def annotate(image: np.ndarray, faces: list[Face]) -> np.ndarray:
  """BGR copy with boxes (green), landmarks (red) and scores drawn; line width follows the size."""
  out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  t = max(1, round(max(image.shape[:2]) / 400))
  for f in faces:
    # Box edges lie half a pixel outside the first / last covered pixel centres.
    x1, y1, x2, y2 = (int(round(v)) for v in (f.box[0] + 0.5, f.box[1] + 0.5, f.box[2] - 0.5,
                                              f.box[3] - 0.5))
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), t)
    cv2.putText(out, f"{f.score:.2f}", (x1, max(y1 - 2 * t, 10 * t)), cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * t, (0, 255, 0), max(1, t // 2))
    if f.landmarks is not None:
      for x, y in f.landmarks:
        cv2.circle(out, (int(round(x)), int(round(y))), t + 1, (0, 0, 255), -1)
  return out
