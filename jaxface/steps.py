"""The model, the train state and the pure, jitted train and eval steps of a run.

State is a plain dict pytree ``{"step", "params", "batch_stats", "opt_state", "rng"}``;
``train_step(state, batch) -> (state, metrics)`` is a pure function, jitted once over a Mesh with the
batch sharded along ``data`` and the state replicated (and donated). Images arrive as uint8 and are
normalised here, on the device (``PREPROCESSING``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from jaxface import config_lib
from jaxface import init_from as init_from_lib
from jaxface import tasks as tasks_lib
from jaxface.tasks import Task
from jaxface.weights import common as weights_common

PyTree = Any

PREPROCESSING = {
    "imagenet": weights_common.TORCHVISION,  # torchvision weights: RGB, /255, ImageNet mean/std
    "caffe_bgr": weights_common.CAFFE_IMAGENET_BGR,  # BGR 0..255 minus mean: Caffe, Keras, ML-Net
    "vggface": weights_common.VGGFACE_BGR,
    "unit": weights_common.Preprocessing("RGB", 1.0 / 255.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def normalize(images_uint8: jax.Array, name: str) -> jax.Array:
  """uint8 RGB (..., 3) -> float32 network input for the preprocessing convention ``name``."""
  if name not in PREPROCESSING:
    raise config_lib.ConfigError(f"config.model.preprocessing: unknown {name!r}; known: "
                                 f"{', '.join(PREPROCESSING)}")
  p = PREPROCESSING[name]
  x = images_uint8[..., ::-1] if p.channel_order == "BGR" else images_uint8
  x = x.astype(jnp.float32) * p.scale
  return (x - jnp.asarray(p.mean, jnp.float32)) / jnp.asarray(p.std, jnp.float32)


def outputs_by_task(out: Any, tasks: Sequence[Task]) -> dict[str, jax.Array]:
  """The model output as ``{task name: logits or map}``."""
  if isinstance(out, dict):
    return {t.name: out[t.name] for t in tasks}
  return {tasks[0].name: out}


# ----------------------------------------------------------------------------- losses


def loss_and_metrics(out: Any, batch: dict[str, jax.Array], params: PyTree, tasks: Sequence[Task],
                     config, class_weights: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """Total loss and summed metrics (``{name: (sum, count)}``) of one (micro-)batch."""
  return tasks_lib.loss_and_metrics(tasks, outputs_by_task(out, tasks), batch, params, config,
                                    class_weights)


# ----------------------------------------------------------------------------- state


def init_variables(model, input_hw: tuple[int, int], seed: int) -> PyTree:
  x = jnp.zeros((1, *input_hw, 3), jnp.float32)
  rngs = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
  # Jitted: one compiled program instead of thousands of eager ops (seconds for a ResNet).
  init = jax.jit(lambda r, v: model.init(r, v, train=False))
  return flax.core.unfreeze(init(rngs, x))


def create_state(variables: PyTree, tx: optax.GradientTransformation, seed: int) -> PyTree:
  params = variables["params"]
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "opt_state": tx.init(params),
      "rng": jax.random.key_data(jax.random.key(seed + 2)),
  }


# init_from's mapping and check live in jaxface.init_from; these names stay for the callers of
# jaxface.steps.
flat_paths = init_from_lib.flat_paths
InitReport = init_from_lib.InitReport
merge_pretrained = init_from_lib.merge_pretrained
load_pretrained = init_from_lib.load_pretrained


# ----------------------------------------------------------------------------- steps


def _split_micro(batch: dict[str, jax.Array], n: int) -> dict[str, jax.Array]:
  return {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}


def make_train_step(model, tx: optax.GradientTransformation, tasks: Sequence[Task], config,
                    class_weights: dict[str, jax.Array], schedule: Callable[[int], float],
                    prepare: Callable[[jax.Array], jax.Array]):
  """``train_step(state, batch) -> (state, metrics)``; metrics are ``{name: (sum, count)}`` plus
  scalar "lr", "grad_norm", "param_norm"."""
  accum = int(config.accum_steps)

  def loss_fn(params, batch_stats, batch, rng):
    variables = {"params": params}
    mutable = []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"]
    x = prepare(batch["image"])
    (out, _), updates = model.apply(variables, x, train=True, rngs={"dropout": rng},
                                    mutable=mutable)
    loss, metrics = loss_and_metrics(out, batch, params, tasks, config, class_weights)
    return loss, (metrics, updates.get("batch_stats", batch_stats))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    params = state["params"]
    if accum == 1:
      (_, (metrics, batch_stats)), grads = grad_fn(params, state["batch_stats"], batch, rng)
    else:
      micro = _split_micro(batch, accum)

      def body(carry, xs):
        grads_sum, stats, metric_sum = carry
        mb, i = xs
        (_, (m, stats)), g = grad_fn(params, stats, mb, jax.random.fold_in(rng, i))
        grads_sum = jax.tree.map(jnp.add, grads_sum, g)
        metric_sum = jax.tree.map(jnp.add, metric_sum, m)
        return (grads_sum, stats, metric_sum), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      first = jax.tree.map(lambda v: v[0], micro)
      _, (m0, _) = jax.eval_shape(loss_fn, params, state["batch_stats"], first, rng)
      metric_zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m0)
      (grads, batch_stats, metrics), _ = jax.lax.scan(
          body, (zeros, state["batch_stats"], metric_zero), (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    out_metrics = dict(metrics)
    out_metrics["lr"] = jnp.asarray(schedule(state["step"]), jnp.float32)
    out_metrics["grad_norm"] = optax.tree.norm(grads)
    out_metrics["param_norm"] = optax.tree.norm(new_params)
    new_state = {"step": state["step"] + 1, "params": new_params, "batch_stats": batch_stats,
                 "opt_state": opt_state, "rng": state["rng"]}
    return new_state, out_metrics

  return train_step


def make_eval_step(model, tasks: Sequence[Task], config, prepare: Callable[[jax.Array], jax.Array]):
  """``eval_step(state, batch) -> {task: predictions, "metrics": {name: (sum, count)}}``.

  The predictions are each task's :meth:`~jaxface.tasks.Task.predict` (probabilities or maps);
  the metrics are the training loss and metrics plus each task's evaluation sums (a saliency
  task's CC, NSS, AUC-Judd, shuffled AUC, KLD and SIM). A batch of GilNet's ten views (images
  (B, 10, H, W, 3)) is averaged over the views' probabilities and has no "metrics".
  """
  def eval_step(state, batch):
    variables = {"params": state["params"]}
    if state["batch_stats"]:
      variables["batch_stats"] = state["batch_stats"]
    images = batch["image"]
    views = images.shape[1] if images.ndim == 5 else 0
    if views:
      images = images.reshape(-1, *images.shape[2:])
    out, aux = model.apply(variables, prepare(images), train=False)
    outputs = outputs_by_task(out, tasks)
    result = {}
    for t in tasks:
      p = t.predict(outputs[t.name].astype(jnp.float32))
      result[t.name] = tasks_lib.average_views(p, views) if views else p
    if not views:
      _, metrics = tasks_lib.loss_and_metrics(tasks, outputs, batch, state["params"], config, {})
      for t in tasks:
        metrics.update(t.eval_metrics(outputs[t.name], batch))
      result["metrics"] = metrics
    return result

  return eval_step


def abstract_state(config, model, mesh):
  """The train state's shapes, dtypes and (replicated) shardings, without computing anything."""
  from jaxface import optim  # pylint: disable=g-import-not-at-top
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  size = tuple(config.model.input_size)
  variables = jax.eval_shape(lambda: init_variables(model, size, config.seed))
  tx = optim.make_optimizer(config.optim, variables["params"], 1, 1)
  shapes = jax.eval_shape(lambda v: create_state(v, tx, config.seed), variables)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      shapes)
