"""Preprocessing ops (``pp``), named in a config by a pipe string.

A pipe string such as ``"decode|face_crop(0.3)|resize(224)|flip_lr|rotate(3)|saliency(0.3)"`` names
registered ops and their literal arguments (ints, floats, strings, tuples, None; positional or
``key=value``). ``Pipeline(pipe)`` applies them in order to one example dict, and ``str(pipeline)``
is the canonical pipe string with every argument spelled out, so a run logs exactly what it did.

Examples are dicts:

* "image": encoded bytes before ``decode``, afterwards RGB uint8 (H, W, 3);
* "saliency" (optional; "fixation" in ``data_pipelines.datasets.synthetic`` is treated the same
  way): a saliency / fixation map aligned with the image, encoded bytes or uint8 (H, W);
* "box" (optional): float32 [x1, y1, x2, y2]; "landmarks" (optional): float32 (5, 2) (x, y) in
  ``LANDMARK_NAMES`` order;
* anything else (labels, "id") passes through untouched.

Coordinates follow ``jaxface.faces.crops``: pixel centres at integers, pixel ``x`` spans
``[x - 0.5, x + 0.5]``. Geometric ops move the image, every map, the box and the landmarks
together; a box is carried as the axis-aligned bound of its four transformed corners.

All ops emit uint8 (normalisation happens on the device). Random ops draw only from the
``np.random.Generator`` they are given, so a seeded generator reproduces the output; the other
ops ignore it. Bad configuration raises ``ValueError`` naming the op and the argument; a bad example
(corrupt bytes, a missing box, landmarks or map that the op needs) raises ``BadExampleError`` so the
loader can skip it and count it.

Modules: ``registry`` (``Op``, ``register``, ``parse``, the shared argument checks), ``pipeline``
(``Pipeline``), ``geometry`` (resize, crops, flip, rotate, ``oversample10``, the fused warp),
``image`` (``decode``, ``color_jitter``), ``face`` (``face_crop``, ``align``, ``task_crop``,
``detect``) and ``saliency`` (``saliency``). Importing this package registers all their ops; the
names below are its interface (``from data_pipelines import pp``; ``pp.Pipeline(pipe)``).
"""

# The op modules register their ops on import; the registry comes first, the pipeline last.
from data_pipelines.pp import registry
from data_pipelines.pp import geometry
from data_pipelines.pp import image
from data_pipelines.pp import face
from data_pipelines.pp import saliency
from data_pipelines.pp import pipeline
from data_pipelines.pp.geometry import GeometricOp, MapSourceOp, fused_warp
from data_pipelines.pp.pipeline import Pipeline
from data_pipelines.pp.registry import (BadExampleError, Example, MAP_KEYS, OPS, Op, PLUGIN_OPS,
                                        lookup, parse, register)

__all__ = ["BadExampleError", "Example", "GeometricOp", "MAP_KEYS", "MapSourceOp", "OPS", "Op",
           "PLUGIN_OPS", "Pipeline", "fused_warp", "lookup", "parse", "register"]
