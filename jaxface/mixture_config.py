"""A mixture's config: its names, field accessors and the checks that need no dataset.

``config_lib.validate`` runs ``validate``; ``jaxface.mixture`` (preparing, reading and evaluating a
mixture) builds on it. This module imports only the leaf ``errors`` (config_lib imports it).
"""

from __future__ import annotations

import os
import re
from typing import Any

from jaxface import errors

NAME = "mixture"  # config.data.name of a mixture
ENTRY_FIELDS = ("name", "config", "manual_dir", "splits", "labels", "rate")
PER_DATASET = "per_dataset"  # results.json key of the per-dataset results
DATASETS_DIR = "datasets"  # <workdir>/datasets/<entry>/: an entry's saliency cache record
_ENTRY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ConfigError = errors.ConfigError


def is_mixture(config) -> bool:
  """Whether ``config.data`` names a mixture (a config saved before mixtures existed does not)."""
  data = config.get("data") if hasattr(config, "get") else None
  return bool(data is not None and data.get("name") == NAME)


def _datasets(config) -> dict[str, Any]:
  mixture = config.data.get("mixture")
  datasets = mixture.get("datasets") if mixture is not None else None
  return {k: datasets[k] for k in sorted(datasets)} if datasets else {}


def _classes(config) -> dict[str, tuple[str, ...]]:
  mixture = config.data.get("mixture")
  classes = mixture.get("classes") if mixture is not None else None
  return {k: tuple(v) for k, v in classes.items()} if classes else {}


def _split_names(config) -> list[str]:
  """The config's split names a mixture must define in every entry."""
  out = []
  for v in (config.data.train_split, config.data.eval_split, config.data.test_split,
            config.eval.get("split")):
    if v and v not in out:
      out.append(str(v))
  return out


# ----------------------------------------------------------------------------- validation


def validate(config) -> None:
  """The checks that need no dataset (``config_lib.validate`` calls it); one-line errors."""
  datasets = _datasets(config)
  if not is_mixture(config):
    if datasets:
      raise ConfigError(f"config.data.mixture.datasets: {', '.join(datasets)} given, but "
                        f"config.data.name is {config.data.name!r}; a mixture needs "
                        f"config.data.name = {NAME!r}")
    return
  where = "config.data.mixture"
  if not datasets:
    raise ConfigError(f"{where}.datasets: config.data.name is {NAME!r} but no dataset is given")
  for field in ("config", "manual_dir"):
    if config.data.get(field):
      raise ConfigError(f"config.data.{field}: {config.data.get(field)!r} is not read by a "
                        f"mixture; give it per dataset ({where}.datasets.<entry>.{field})")
  if config.task.kind != "class":
    raise ConfigError(f"config.task.kind: a mixture maps class labels, so it needs 'class', got "
                      f"{config.task.kind!r}")
  classes = _classes(config)
  labels = tuple(config.data.labels)
  if set(classes) != set(labels):
    raise ConfigError(f"{where}.classes: give the class names of exactly the label keys of "
                      f"config.data.labels ({', '.join(labels)}), got {sorted(classes)}")
  for key, names in classes.items():
    if not names or not all(isinstance(n, str) and n for n in names):
      raise ConfigError(f"{where}.classes.{key}: must be a tuple of class names, got {names!r}")
    if len(set(names)) != len(names):
      raise ConfigError(f"{where}.classes.{key}: a class is named twice in {names!r}")
  split_names = _split_names(config)
  contributes = {s: [] for s in split_names}
  given = {key: set() for key in classes}
  for entry, spec in datasets.items():
    _validate_entry(config, entry, spec, classes, split_names, contributes, given)
  for split, entries in contributes.items():
    if not entries:
      raise ConfigError(f"{where}.datasets: no dataset gives a split for {split!r} (every "
                        f"entry's splits.{split} is empty)")
  for key, names in classes.items():
    missing = [n for n in names if n not in given[key]]
    if missing:
      raise ConfigError(f"{where}.classes.{key}: no dataset's labels map onto {missing} (a class "
                        "without examples cannot be trained)")


def _validate_entry(config, entry: str, spec, classes, split_names, contributes, given) -> None:
  where = f"config.data.mixture.datasets.{entry}"
  if not _ENTRY_NAME.match(entry):
    raise ConfigError(f"{where}: an entry name must be an identifier (letters, digits, _)")
  if not hasattr(spec, "keys"):
    raise ConfigError(f"{where}: must be a dict of {', '.join(ENTRY_FIELDS)}, got {spec!r}")
  unknown = sorted(set(spec.keys()) - set(ENTRY_FIELDS))
  if unknown:
    raise ConfigError(f"{where}.{unknown[0]}: unknown field (fields: {', '.join(ENTRY_FIELDS)})")
  name = spec.get("name")
  if not isinstance(name, str) or not name or name == NAME:
    raise ConfigError(f"{where}.name: must name a dataset builder, got {name!r}")
  if not isinstance(spec.get("config", "") or "", str):
    raise ConfigError(f"{where}.config: must be a builder config name, got {spec.get('config')!r}")
  manual = spec.get("manual_dir", "") or ""
  if not isinstance(manual, str):
    raise ConfigError(f"{where}.manual_dir: must be a directory, got {manual!r}")
  if manual and not os.path.isdir(os.path.expanduser(manual)):
    raise ConfigError(f"{where}.manual_dir: directory does not exist: {manual}")
  rate = spec.get("rate", 1.0)
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
    raise ConfigError(f"{where}.rate: must be a number > 0, got {rate!r}")
  splits = spec.get("splits")
  if not hasattr(splits, "keys"):
    raise ConfigError(f"{where}.splits: must map the config's split names "
                      f"({', '.join(split_names)}) to this dataset's split strings, got {splits!r}")
  for split in split_names:
    if split not in splits:
      raise ConfigError(f"{where}.splits.{split}: missing (give this dataset's split string, or "
                        "\"\" to leave it out of that split)")
  for split, value in splits.items():
    if not isinstance(value, str):
      raise ConfigError(f"{where}.splits.{split}: must be a split string, got {value!r}")
    if value and split in contributes:
      contributes[split].append(entry)
  labels = spec.get("labels")
  if not hasattr(labels, "keys"):
    raise ConfigError(f"{where}.labels: must map each label key ({', '.join(classes)}) to "
                      f"{{dataset class: class}}, got {labels!r}")
  for key in classes:
    if key not in labels:
      raise ConfigError(f"{where}.labels.{key}: missing; map this dataset's {key} classes onto "
                        f"{', '.join(classes[key])}")
  for key in labels:
    if key not in classes:
      raise ConfigError(f"{where}.labels.{key}: not a label of the run (config.data.labels: "
                        f"{', '.join(classes)})")
    mapping = labels[key]
    if not hasattr(mapping, "items") or not mapping:
      raise ConfigError(f"{where}.labels.{key}: must map class names to class names, got "
                        f"{mapping!r}")
    for src, dst in mapping.items():
      if dst not in classes[key]:
        raise ConfigError(f"{where}.labels.{key}.{src}: {dst!r} is not a class of "
                          f"config.data.mixture.classes.{key} ({', '.join(classes[key])})")
      given[key].add(dst)
