"""Data pipelines: tfds builders written as ArrayRecord, read by grain, all without TensorFlow.

``python -m data_pipelines.build NAME`` prepares a dataset (see ``build.py``); the recipe and its
pitfalls are in ``TFDS_WITHOUT_TF.md``.

tensorflow-datasets 4.9.x imports the ``importlib_resources`` backport for builders defined in
package modules; where the backport is not installed the standard library module stands in.
"""

import importlib.resources
import sys

try:
  import importlib_resources  # noqa: F401
except ImportError:
  sys.modules.setdefault("importlib_resources", importlib.resources)
