"""Small utilities shared by the model tests."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxface import models


def count_params(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract(name, input_shape=None, batch=2, **kw):
  """(variables, output, aux) shapes of a registry model, without computing anything."""
  model = models.get(name, **kw)
  x = jax.ShapeDtypeStruct((batch, *(input_shape or models.spec(name).input_shape)), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, aux = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  return variables, out, aux


def random_variables(model, x, seed=0):
  """He-scaled numpy parameters (biases 0.1 sd): no compile of the random initialisers."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * (np.sqrt(2 / np.prod(s.shape[:-1])) if len(s.shape) > 1
                                             else 0.1)).astype(np.float32), shapes)


def lfw_photo(patch: np.ndarray) -> np.ndarray:
  """A 25x25 scikit-image LFW patch as a person would feed it to a detector: cubic upscale to
  100 px, 30 px of mid-grey context, gray to RGB."""
  big = cv2.resize(patch.astype(np.float32) * 255, (100, 100), interpolation=cv2.INTER_CUBIC)
  big = np.clip(big, 0, 255).round().astype(np.uint8)
  big = cv2.copyMakeBorder(big, 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=128)
  return cv2.cvtColor(big, cv2.COLOR_GRAY2RGB)
