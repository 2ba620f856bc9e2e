"""Small utilities shared by the model tests."""

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
