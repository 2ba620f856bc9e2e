"""Residual Attention Network: full-size counts and shapes (eval_shape), one attention module
against a hand-written torch reference (prototxt and tengshaofeng forms), tiny-width training."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jaxface import models
from jaxface.models import residual_attention as ran
from jaxface.weights import common
from tests.helpers import count_params as _count

# Exact trainable-parameter counts of this implementation (BN scale/shift included, running stats in
# batch_stats). They equal the totals obtained by parsing the authors' released deploy prototxts
# (Attention-56: 31,810,728; Attention-92: 52,466,344, BN scale/shift counted as in their BN layers).
# The paper reports 31.9M and 51.3M: Attention-56 is 0.28% below; Attention-92 is 2.27% above,
# because the paper's 92-vs-56 difference (19.4M) is smaller than what the prototxt's three extra
# modules add (one stage-2 and two stage-3 modules: 3.05M + 2 x 8.80M = 20.66M).
PARAMS = {"attention56": 31_810_728, "attention92": 52_466_344, "attention92_32": 12_170_730}
PAPER = {"attention56": (31.9e6, 0.01), "attention92": (51.3e6, 0.025)}


@functools.lru_cache(maxsize=None)
def _abstract_init(model, shape):
  """Variable shapes of ``model.init`` (cached: tracing the full-size networks takes seconds)."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)


def _abstract_apply(model, variables, shape, **kw):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v, x: model.apply(v, x, **kw), variables, x)



def test_full_size_param_counts():
  for name, n in PARAMS.items():
    s = models.spec(name)
    v = _abstract_init(models.get(name), (1, *s.input_shape))
    assert _count(v["params"]) == n, name
    if name in PAPER:
      reported, tol = PAPER[name]
      assert abs(n / reported - 1) < tol, name
    assert v["params"]["fc"]["kernel"].shape == (1024 if name == "attention92_32" else 2048,
                                                 s.num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("name,num_modules", [("attention56", (1, 1, 1)),
                                              ("attention92", (1, 2, 3))])
def test_full_size_shapes_at_224_200_and_64(name, num_modules):
  model = models.get(name)
  v = _abstract_init(model, (1, 224, 224, 3))
  names = [f"attention{s + 1}_{k + 1}" for s in range(3) for k in range(num_modules[s])]
  assert sorted(k for k in v["params"] if k.startswith("attention")) == names
  # Spatial size of stages 1-3 and of the final map; channels 256, 512, 1024, 2048.
  for size, sides in ((224, (56, 28, 14, 7)), (200, (50, 25, 13, 7)), (64, (16, 8, 4, 2))):
    out, aux = _abstract_apply(model, v, (2, size, size, 3))
    assert out.shape == (2, 1000)
    masks = [aux[f"mask{i + 1}"].shape for i in range(len(names))]
    expect = [(2, sides[s], sides[s], 256 * 2**s) for s in range(3) for _ in range(num_modules[s])]
    assert masks == expect, size
    assert aux["stage3"].shape == (2, sides[2], sides[2], 1024)
    assert aux["features"].shape == (2, sides[3], sides[3], 2048)
    assert aux["pre_logits"].shape == (2, 2048)
  if name == "attention56":
    # The tengshaofeng form (floor pooling, extra sums) has the same shapes and parameters.
    out, aux = _abstract_apply(models.get(name, tengshaofeng=True, pooling="torch"), v,
                               (2, 200, 200, 3))
    assert out.shape == (2, 1000) and aux["mask1"].shape == (2, 50, 50, 256)


def test_cifar_variant_shapes_and_headless_forms():
  model = models.get("attention92_32")
  v = _abstract_init(model, (1, 32, 32, 3))
  out, aux = _abstract_apply(model, v, (2, 32, 32, 3))
  assert out.shape == (2, 10)
  assert [aux[f"mask{i}"].shape[1:] for i in range(1, 7)] == (
      [(32, 32, 128)] + [(16, 16, 256)] * 2 + [(8, 8, 512)] * 3)
  assert aux["features"].shape == (2, 8, 8, 1024)
  # Mask-branch depth 2-1-0: one skip / up unit in stage 1, none in stages 2 and 3.
  assert "skip1" in v["params"]["attention1_1"] and "up1" in v["params"]["attention1_1"]
  assert "up1" not in v["params"]["attention2_1"]
  assert sorted(v["params"]["attention3_1"]) == sorted(
      ["pre", "trunk1", "trunk2", "middle1", "middle2", "mask_bn1", "mask_conv1", "mask_bn2",
       "mask_conv2", "post"])
  assert v["params"]["post_res_4_1"]["shortcut"]["kernel"].shape == (1, 1, 512, 1024)
  m = models.get("attention56", num_classes=0, width=1 / 16)
  out, _ = _abstract_apply(m, _abstract_init(m, (1, 64, 64, 3)), (1, 64, 64, 3))
  assert out.shape == (1, 128)
  m = models.get("attention56", features_only=True, width=1 / 16)
  v = _abstract_init(m, (1, 64, 64, 3))
  out, _ = _abstract_apply(m, v, (1, 64, 64, 3))
  assert out.shape == (1, 2, 2, 128) and "fc" not in v["params"]


# ---------------------------------------------------------------------------------------------
# One attention module against torch. The reference is written out like the prototxt (one line per
# layer, fixed depth), independently of the loop in the Flax module; submodule names match so the
# weights copy over mechanically.

class TorchUnit(nn.Module):
  """Pre-activation bottleneck (Caffe ``branch1`` / ``branch2``)."""

  def __init__(self, cin, cout, stride=1):
    super().__init__()
    mid = cout // 4
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(mid)
    self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
    self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                     if cin != cout or stride != 1 else None)

  def forward(self, x):
    a = F.relu(self.bn1(x))
    h = self.conv3(F.relu(self.bn3(self.conv2(F.relu(self.bn2(self.conv1(a)))))))
    return h + (x if self.shortcut is None else self.shortcut(a))


class TorchAttention(nn.Module):
  """Attention module with a 3-pool mask branch (stage 1) or none (tengshaofeng CIFAR stage 3)."""

  def __init__(self, c, num_pools, tengshaofeng, pooling, activation):
    super().__init__()
    assert num_pools in (0, 3)
    self.num_pools, self.tengshaofeng, self.pooling = num_pools, tengshaofeng, pooling
    self.activation = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    names = ["pre", "trunk1", "trunk2", "middle1", "middle2", "post"]
    if num_pools == 3:
      names += ["down1", "skip1", "down2", "skip2", "up2", "up1"]
    for name in names:
      setattr(self, name, TorchUnit(c, c))
    self.mask_bn1 = nn.BatchNorm2d(c)
    self.mask_conv1 = nn.Conv2d(c, c, 1, bias=False)
    self.mask_bn2 = nn.BatchNorm2d(c)
    self.mask_conv2 = nn.Conv2d(c, c, 1, bias=False)

  def pool(self, x):
    if self.pooling == "caffe":  # Caffe: no padding, ceil output size.
      return F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    return F.max_pool2d(x, 3, 2, 1)  # tengshaofeng nn.MaxPool2d(3, 2, padding=1).

  @staticmethod
  def interp(x, like):  # Caffe Interp / UpsamplingBilinear2d: align_corners=True.
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)

  def forward(self, x):
    x1 = self.pre(x)
    trunk = self.trunk2(self.trunk1(x1))
    if self.num_pools == 0:
      h = self.middle2(self.middle1(x1))
    else:
      d1 = self.down1(self.pool(x1))
      s1 = self.skip1(d1)
      d2 = self.down2(self.pool(d1))
      s2 = self.skip2(d2)
      d3 = self.middle2(self.middle1(self.pool(d2)))
      u2 = self.interp(d3, d2) + s2
      if self.tengshaofeng:
        u2 = u2 + d2
      u1 = self.interp(self.up2(u2), d1) + s1
      if self.tengshaofeng:
        u1 = u1 + d1
      h = self.interp(self.up1(u1), trunk)
      if self.tengshaofeng:
        h = h + trunk
    m = self.mask_conv1(F.relu(self.mask_bn1(h)))
    mask = self.activation(self.mask_conv2(F.relu(self.mask_bn2(m))))
    return self.post((1 + mask) * trunk), mask


def _randomise_bn(net, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
  return net.eval()


def torch_to_flax(sd, template):
  """Module-name-preserving copy: 'down1.conv2.weight' -> params/down1/conv2/kernel (HWIO)."""
  arrays = {}
  for key, t in sd.items():
    module, _, leaf = key.rpartition(".")
    path, value = module.replace(".", "/"), t.numpy()
    if leaf == "num_batches_tracked":
      continue
    if module.rsplit(".", 1)[-1].startswith(("bn", "mask_bn")):
      coll, name = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                    "running_mean": ("batch_stats", "mean"),
                    "running_var": ("batch_stats", "var")}[leaf]
      arrays[f"{coll}/{path}/{name}"] = value
    else:
      arrays[f"params/{path}/kernel"] = common.conv_oihw_to_hwio(value)
  return common.assemble(template, arrays)  # Every layer present, every shape right.


@pytest.mark.parametrize("num_pools,tengshaofeng,pooling,size,activation", [
    # Prototxt: pools 20 -> 10 -> 5 -> 2 (ceil: the last windows overhang), up 2 -> 5 -> 10 -> 20.
    (3, False, "caffe", 20, "sigmoid"),
    (3, True, "torch", 21, "sigmoid"),  # tengshaofeng: 21 -> 11 -> 6 -> 3 (floor, padding 1).
    (0, True, "torch", 8, "sigmoid"),  # tengshaofeng CIFAR stage 3: no pooling, no up-sampling.
    (0, False, "caffe", 9, "tanh"),  # The TanH mask of the older Attention-92 prototxt.
])
def test_attention_module_matches_torch(num_pools, tengshaofeng, pooling, size, activation):
  c = 16
  torch.manual_seed(num_pools + size)
  net = _randomise_bn(TorchAttention(c, num_pools, tengshaofeng, pooling, activation), seed=size)
  x = np.random.default_rng(size).normal(size=(2, size, size, c)).astype(np.float32)
  with torch.no_grad():
    ref_out, ref_mask = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  module = ran.AttentionModule(c, num_pools, tengshaofeng=tengshaofeng, pooling=pooling,
                               mask_activation=activation)
  template = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), jnp.asarray(x))
  variables = torch_to_flax(net.state_dict(), template)
  apply = jax.jit(lambda v, x: module.apply(v, x))
  out, mask = apply(variables, jnp.asarray(x))
  # Tolerance from the computation: torch and XLA sum the same float32 products in other orders;
  # a dot of length n errs by ~sqrt(n) * 2^-24 relative, at most depth * sqrt(n_max) * 2^-24
  # through the convs (~1e-5 here; observed ~1e-7). The mask is sigmoid / tanh(z): an error
  # rel * |z| moves it by slope(z) * |z| * rel < rel / 2. A floor-for-ceil pool or a shifted
  # up-sampling moves both by O(0.1).
  kernels = [k for k in jax.tree.leaves(variables["params"]) if k.ndim == 4]
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  np.testing.assert_allclose(np.asarray(mask), ref_mask.numpy().transpose(0, 2, 3, 1), rtol=0,
                             atol=rel)
  np.testing.assert_allclose(np.asarray(out), ref_out.numpy().transpose(0, 2, 3, 1), rtol=0,
                             atol=rel * np.abs(ref_out.numpy()).max())
  assert 0.05 < float(np.std(ref_out.numpy())) < 100  # A non-degenerate comparison.
  if num_pools == 3:
    # The other form, same weights: different sums / pooling windows change the result.
    other = ran.AttentionModule(c, num_pools, tengshaofeng=not tengshaofeng, pooling=pooling)
    out2, _ = jax.jit(lambda v, x: other.apply(v, x))(variables, jnp.asarray(x))
    assert np.abs(np.asarray(out2) - np.asarray(out)).max() > 1e-2
    other = ran.AttentionModule(c, num_pools, tengshaofeng=tengshaofeng,
                                pooling="torch" if pooling == "caffe" else "caffe")
    out3, _ = jax.jit(lambda v, x: other.apply(v, x))(variables, jnp.asarray(x))
    assert np.abs(np.asarray(out3) - np.asarray(out)).max() > 1e-3


def test_invalid_options_are_refused():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  for kw in ({"pooling": "avg"}, {"mask_activation": "relu"}):
    m = models.get("attention56", width=1 / 16, **kw)
    with pytest.raises(ValueError, match=list(kw)[0]):
      jax.eval_shape(lambda x, m=m: m.init(jax.random.PRNGKey(0), x), x)


# ---------------------------------------------------------------------------------------------
# Tiny-width training steps.

def _random_variables(model, shape, seed):
  """Random parameters and BN statistics shaped like ``model.init``'s, without compiling init
  (its random-number program alone takes longer to compile on CPU than the training step)."""
  rng = np.random.default_rng(seed)
  template = _abstract_init(model, shape)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(size=leaf.shape) * math.sqrt(1.0 / np.prod(leaf.shape[:-1]))
    if name in ("scale", "var"):
      return rng.uniform(0.75, 1.25, size=leaf.shape)
    return rng.normal(size=leaf.shape) * 0.1  # bias, mean

  return jax.tree_util.tree_map_with_path(lambda p, l: jnp.asarray(fill(p, l), jnp.float32),
                                          template)


def _train_and_eval_grads(model, x, num_classes, train_modes=(True, False)):
  """Checks gradients in training mode (batch statistics, running stats updated) and/or in
  evaluation mode (running statistics untouched)."""
  variables = _random_variables(model, x.shape, seed=0)
  stats = variables["batch_stats"]

  def loss_fn(params, train):
    v = {"params": params, "batch_stats": stats}
    if train:
      (logits, aux), new = model.apply(v, x, train=True, mutable=["batch_stats"])
      new_stats = new["batch_stats"]
    else:
      (logits, aux), new_stats = model.apply(v, x), stats
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), (logits, aux["mask1"], new_stats)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  # One compiled program (each compile costs seconds on CPU); checks in numpy, as per-leaf jnp
  # reductions would each compile too.
  results = jax.device_get(jax.jit(lambda p: [grad_fn(p, t) for t in train_modes])(
      variables["params"]))
  stats = jax.device_get(stats)
  for train, (grads, (logits, mask, new_stats)) in zip(train_modes, results):
    assert logits.shape == (x.shape[0], num_classes) and np.all(np.isfinite(logits))
    assert np.all((mask > 0) & (mask < 1))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.abs(g).sum() > 0 for g in leaves)
    changed = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), stats, new_stats))
    assert all(changed) if train else not any(changed)


@pytest.mark.slow
def test_attention56_tiny_forward_backward_train():
  # Each mode is a separate multi-second compile on CPU, so the networks split the modes (same
  # module types): training mode here, evaluation mode for attention92 and attention92_32.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
  _train_and_eval_grads(models.get("attention56", width=1 / 16, num_classes=5), x, 5,
                        train_modes=(True,))


@pytest.mark.slow
def test_attention92_32_tiny_forward_backward_eval():
  # The CIFAR stem, 2-1-0 mask pools, floor pooling and the tengshaofeng sums.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)), jnp.float32)
  _train_and_eval_grads(models.get("attention92_32", width=1 / 16), x, 10, train_modes=(False,))


@pytest.mark.slow
def test_attention92_tiny_forward_backward_eval():
  # Evaluation mode (running statistics) on the largest of the three graphs.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)), jnp.float32)
  _train_and_eval_grads(models.get("attention92", width=1 / 16, num_classes=3), x, 3,
                        train_modes=(False,))
