"""Task heads placed on a backbone's features.

* ``softmax``: one linear layer to ``num_classes`` logits (single task).
* ``gender_age``: multi-task head of Abdolrashidi et al. (arXiv:2010.03791): the gender branch
  predicts gender; its softmax probabilities are concatenated to the last hidden layer of the age
  branch.
* ``attributes``: ``num_attributes`` independent logits for the CelebA sigmoid loss (Zhang et al.).
* ``multi_softmax``: one softmax layer per task on shared features (``{task: logits}``).
* ``gap``: global average pooling of the last conv map + linear layer, the Class Activation Map
  form of SAF-BAGE (arXiv:1803.05719: AlexNet with the fc layers replaced by GAP).

Heads return ``(output, aux)`` like every model; the combined model merges the backbone's aux.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _dropout_linear(module: nn.Module, x, n: int, train: bool):
  x = nn.Dropout(module.dropout_rate, deterministic=not train)(x)
  return nn.Dense(n, dtype=module.dtype, name="fc")(x)


class SoftmaxHead(nn.Module):
  num_classes: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    logits = _dropout_linear(self, x, self.num_classes, train)
    return logits, {"logits": logits}


class AttributeHead(nn.Module):
  """Independent binary logits, trained with per-attribute sigmoid cross-entropy."""
  num_attributes: int = 40
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    logits = _dropout_linear(self, x, self.num_attributes, train)
    return logits, {"logits": logits, "probs": jax.nn.sigmoid(logits)}


class GenderAgeHead(nn.Module):
  """Gender logits, and age logits computed from [age hidden features, gender probabilities]."""
  num_age_classes: int = 8
  num_gender_classes: int = 2
  hidden: int = 256
  dropout_rate: float = 0.0
  feed_gender: bool = True  # False gives two independent heads (ablation).
  stop_gradient_gender: bool = False  # True: the age loss does not train the gender branch.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    gender_logits = nn.Dense(self.num_gender_classes, dtype=self.dtype, name="gender_fc")(x)
    age_hidden = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="age_hidden")(x))
    age_hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(age_hidden)
    age_in = age_hidden
    if self.feed_gender:
      gender_probs = jax.nn.softmax(gender_logits.astype(jnp.float32)).astype(age_hidden.dtype)
      if self.stop_gradient_gender:
        gender_probs = jax.lax.stop_gradient(gender_probs)
      age_in = jnp.concatenate([age_hidden, gender_probs], axis=-1)
    age_logits = nn.Dense(self.num_age_classes, dtype=self.dtype, name="age_fc")(age_in)
    out = {"gender": gender_logits, "age": age_logits}
    return out, {"age_hidden": age_hidden}


class MultiSoftmaxHead(nn.Module):
  """Independent softmax heads on shared features, one per task: ``{task: logits}``.

  ``tasks`` is a tuple of ``(name, num_classes)`` pairs (a tuple, so the module stays hashable).
  """
  tasks: tuple[tuple[str, int], ...]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    out = {name: nn.Dense(int(n), dtype=self.dtype, name=f"{name}_fc")(x)
           for name, n in self.tasks}
    return out, {}


class GapHead(nn.Module):
  """Global average pooling + linear classifier; ``aux['cam_weights']`` gives the CAM weights."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fmap_BHWC, train: bool = False):
    pooled = jnp.mean(fmap_BHWC, axis=(1, 2))
    dense = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")
    logits = dense(pooled)
    return logits, {"gap": pooled}


HEADS: dict[str, tuple[type[nn.Module], bool]] = {
    # name: (class, needs the feature map rather than pre-logits)
    "softmax": (SoftmaxHead, False),
    "attributes": (AttributeHead, False),
    "gender_age": (GenderAgeHead, False),
    "gap": (GapHead, True),
    "multi_softmax": (MultiSoftmaxHead, False),
}


class WithHead(nn.Module):
  """A backbone (built without its top layer) followed by a head."""
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, x, train: bool = False):
    feats, aux = self.backbone(x, train=train)
    out, head_aux = self.head(feats, train=train)
    return out, {**aux, **{f"head/{k}": v for k, v in head_aux.items()}}


def cam(fmap_BHWC: jax.Array, fc_kernel: jax.Array, class_idx: jax.Array) -> jax.Array:
  """Class activation map (Zhou et al. 2016): sum_c w[c, k] * fmap[..., c] for class k per example.

  ``fc_kernel`` is the GAP head's Dense kernel (C, K); returns (B, H, W).
  """
  w_BC = jnp.take(fc_kernel, class_idx, axis=1).T
  return jnp.einsum("bhwc,bc->bhw", fmap_BHWC, w_BC)


def with_head(builder: Callable[..., nn.Module], head: str, head_kwargs: dict[str, Any],
              model_kwargs: dict[str, Any]) -> nn.Module:
  if head not in HEADS:
    raise ValueError(f"unknown head {head!r}; choose one of {sorted(HEADS)}")
  cls, needs_fmap = HEADS[head]
  model_kwargs = dict(model_kwargs)
  num_classes = model_kwargs.pop("num_classes", None)
  head_kwargs = dict(head_kwargs)
  if cls in (SoftmaxHead, GapHead):
    if num_classes is None and "num_classes" not in head_kwargs:
      raise ValueError(f"head={head!r} needs num_classes")
    head_kwargs.setdefault("num_classes", num_classes)
  elif num_classes is not None:
    raise ValueError(f"head={head!r} takes its class counts in head_kwargs, not num_classes")
  if "dtype" in model_kwargs:
    head_kwargs.setdefault("dtype", model_kwargs["dtype"])
  if needs_fmap:
    backbone = builder(features_only=True, **model_kwargs)
  else:
    backbone = builder(num_classes=0, **model_kwargs)
  return WithHead(backbone=backbone, head=cls(**head_kwargs))
