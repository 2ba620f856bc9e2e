"""The task kinds: one class each, built from (name, kind), and the loops over tasks the steps use."""

import dataclasses
import json
import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxface import config_lib
from jaxface import tasks
from jaxface.tasks import Task


def _config(**task):
  c = config_lib.base_config()
  for k, v in task.items():
    c.task[k] = ml_collections.ConfigDict(v) if isinstance(v, dict) else v
  return c


def test_task_builds_its_kinds_class_and_reads_back_from_its_dict():
  age = Task("age", "class", ("0-2", "4-6"), True)
  assert isinstance(age, tasks.Classification) and age.ordinal and age.num_classes == 2
  assert isinstance(Task("attributes", "attributes", ("Male",)), tasks.Attributes)
  assert isinstance(Task("saliency", "saliency"), tasks.Saliency)
  assert isinstance(Task("output", "output"), tasks.Output)
  # run.json stores t.__dict__; reading it back gives an equal task of the same class.
  d = json.loads(json.dumps(age.__dict__))
  assert d == {"name": "age", "kind": "class", "class_names": ["0-2", "4-6"], "ordinal": True}
  again = Task(d["name"], d["kind"], tuple(d["class_names"]), d["ordinal"])
  assert again == age and type(again) is type(age)
  assert dataclasses.replace(age, ordinal=False) == tasks.Classification(
      "age", class_names=("0-2", "4-6"))
  with pytest.raises(ValueError, match="unknown task kind 'classify'"):
    Task("age", "classify")
  with pytest.raises(ValueError, match="kind 'class', got 'saliency'"):
    tasks.Classification("age", "saliency")


def test_one_name_per_kind_in_config_and_code():
  assert set(config_lib.TASK_KINDS) <= set(tasks.KINDS)
  for kind in config_lib.TASK_KINDS:
    assert tasks.for_config(_config(kind=kind)).KIND == kind
  # A config.json written before the rename still reads.
  assert tasks.for_config(_config(kind="classify")) is tasks.Classification
  with pytest.raises(config_lib.ConfigError, match="config.task.kind"):
    tasks.for_config(_config(kind="regression"))


# Softmax logits whose log-probabilities are log(P).
P = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)


def test_multitask_loss_is_the_weighted_sum_of_each_tasks_own_mean():
  outputs = {"age": jnp.asarray(np.log(P)),
             "gender": jnp.log(jnp.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])),
             "attrs": jnp.array([[0.0], [0.0], [0.0]])}
  batch = {"age": jnp.array([0, -1, 1]), "gender": jnp.array([1, 1, -1]),
           "attrs": jnp.array([[1], [0], [1]]), "mask": jnp.ones(3)}
  run = [Task("age", "class", ("a", "b", "c")), Task("gender", "class", ("f", "m")),
         Task("attrs", "attributes", ("x",))]
  config = _config(loss_weights={"age": 1.0, "gender": 0.5, "attrs": 2.0})
  total, metrics = tasks.loss_and_metrics(run, outputs, batch, {}, config, {})
  age = -(math.log(0.5) + math.log(0.3)) / 2
  gender = -(math.log(0.1) + math.log(0.6)) / 2
  attrs = math.log(2.0)
  # metrics are (sum, count): the loss sums over each task's own labelled examples.
  np.testing.assert_allclose(np.divide(*metrics["age/loss"]), age, rtol=1e-6)
  np.testing.assert_allclose(np.divide(*metrics["gender/loss"]), gender, rtol=1e-6)
  assert float(metrics["gender/loss"][1]) == 2
  np.testing.assert_allclose(np.divide(*metrics["attrs/loss"]), attrs, rtol=1e-6)
  np.testing.assert_allclose(total, age + 0.5 * gender + 2 * attrs, rtol=1e-6)
  assert tuple(map(float, metrics["age/accuracy"])) == (1.0, 2.0)  # argmax 0 right, 0 vs 1 wrong
  # Unweighted by default.
  total, _ = tasks.loss_and_metrics(run, outputs, batch, {}, _config(), {})
  np.testing.assert_allclose(total, age + gender + attrs, rtol=1e-6)
  with pytest.raises(config_lib.ConfigError, match=r"loss_weights: \['expr'\]"):
    tasks.loss_and_metrics(run, outputs, batch, {}, _config(loss_weights={"expr": 1.0}), {})


def test_predictions_are_softmax_sigmoid_or_the_map():
  o = jnp.array([[0.0, math.log(3.0)]])
  np.testing.assert_allclose(Task("g", "class", ("f", "m")).predict(o), [[0.25, 0.75]], rtol=1e-6)
  np.testing.assert_allclose(Task("a", "attributes", ("x", "y")).predict(o), [[0.5, 0.75]],
                             rtol=1e-6)
  np.testing.assert_array_equal(Task("saliency", "saliency").predict(o), o)


def test_average_views():
  # Two images x 2 views, flat with views contiguous (how the eval step gets GilNet's views).
  flat = jnp.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.5, 0.5]])
  np.testing.assert_allclose(tasks.average_views(flat, 2), [[0.3, 0.7], [0.7, 0.3]], rtol=1e-6)
  ten = np.repeat(np.array([[0.1, 0.9]], np.float32), 10, axis=0)
  ten[0] = [0.9, 0.1]
  np.testing.assert_allclose(tasks.average_views(jnp.asarray(ten), 10), [[0.18, 0.82]], rtol=1e-6)
  with pytest.raises(ValueError, match="multiple of num_views"):
    tasks.average_views(flat[:3], 2)


def test_reports_and_records_per_kind(tmp_path):
  age = Task("age", "class", ("0-2", "4-6", "8-12"), True)
  attrs = Task("attrs", "attributes", ("Male", "Young"))
  sal = Task("saliency", "saliency")
  probs = {"age": np.eye(3)[[0, 1, 2, 2]], "attrs": np.array([[0.9, 0.2], [0.1, 0.7]]),
           "saliency": np.zeros((2, 4, 4))}
  labels = {"age": np.array([0, 2, 2, -1]), "attrs": np.array([[1, 1], [0, 1]])}
  sums = {"saliency/cc": (1.5, 2.0), "saliency/nss": (3.0, 0.0), "saliency/loss": (0.5, 2.0)}
  out = tasks.reports([age, attrs, sal], probs, labels, sums, 2)
  assert out["age"]["accuracy"] == pytest.approx(2 / 3) and out["age"]["one_off"] == 1.0
  assert out["attrs"]["accuracy"] == pytest.approx(0.75) and out["attrs"]["n"] == 2
  assert out["saliency"] == {"cc": 0.75, "loss": 0.25, "n": 2}  # no count: not reported
  # Without the step's sums (an ensemble of probabilities) a saliency task has no report.
  assert "saliency" not in tasks.reports([sal], probs, labels)
  lines = age.write_outputs(str(tmp_path), out["age"])
  assert lines[0] == "== age" and "accuracy 66.67%" in lines[1]
  assert (tmp_path / "confusion_age.csv").read_text().splitlines()[0] == "0-2,4-6,8-12"
  assert (tmp_path / "confusion_age.png").exists()
  assert sal.write_outputs(str(tmp_path), out["saliency"])[0].startswith('== saliency: {"cc"')
  assert age.record(np.array([0.2, 0.7, 0.1])) == {
      "label": "4-6", "confidence": 0.7, "probs": {"0-2": 0.2, "4-6": 0.7, "8-12": 0.1}}
  assert attrs.record(np.array([0.9, 0.2])) == {"labels": ["Male"],
                                                "probs": {"Male": 0.9, "Young": 0.2}}
  assert [t.labelled for t in (age, attrs, sal)] == [True, True, False]
  assert [t.single_label for t in (age, attrs)] == [True, False]
