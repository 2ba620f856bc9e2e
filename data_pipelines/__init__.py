"""Data pipelines: tfds builders written as ArrayRecord, read by grain, all without TensorFlow.

``python -m data_pipelines.build NAME`` prepares a dataset (see ``build.py``) and
``python -m data_pipelines.show NAME`` draws a few of its examples; the recipe and its pitfalls are
in ``TFDS_WITHOUT_TF.md``. ``datasets/`` holds the builders and ``datasets.sources`` (``prepare``,
``open_source``), ``pp/`` the preprocessing ops, ``loader/`` the grain loader and its worker
processes, ``saliency_cache.py`` the saliency cache's format.

tensorflow-datasets 4.9.x imports the ``importlib_resources`` backport for builders defined in
package modules; where the backport is not installed the standard library module stands in.
"""

import importlib.resources
import sys

try:
  import importlib_resources  # noqa: F401
except ImportError:
  sys.modules.setdefault("importlib_resources", importlib.resources)
