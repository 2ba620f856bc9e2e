"""The task kinds, each owning its logic (see :mod:`jaxface.tasks.task`): ``"class"`` and
``"attributes"`` (:mod:`~jaxface.tasks.classification`), ``"saliency"``
(:mod:`~jaxface.tasks.saliency`) and ``"output"``; host-side metrics in :mod:`~jaxface.tasks.metrics`.

Importing the package registers every kind, so ``Task(name, kind, ...)`` builds any of them.
"""

from jaxface import config_lib
from jaxface.tasks.classification import Attributes, Classification  # noqa: F401
from jaxface.tasks.saliency import Saliency  # noqa: F401
from jaxface.tasks.task import (KINDS, Output, Task, average_views, kind_class,  # noqa: F401
                                loss_and_metrics, reports)

_RENAMED = {"classify": "class"}


def for_config(config) -> type[Task]:
  """The kind of ``config.task.kind`` (one of ``config_lib.TASK_KINDS``).

  A workdir's ``config.json`` written before the kind was renamed says "classify"; it is read as
  "class", the one name everywhere now.
  """
  kind = _RENAMED.get(config.task.kind, config.task.kind)
  if kind not in config_lib.TASK_KINDS:
    raise config_lib.ConfigError(f"config.task.kind: must be one of {config_lib.TASK_KINDS}, got "
                                 f"{config.task.kind!r}")
  return KINDS[kind]
