"""layers.Conv / conv2d: every lowering equals lax.conv_general_dilated to float rounding, forward
and gradients, on the zoo's kernel / stride / padding / group forms; nn.Conv's parameters. Also the
CPU's tiled max pooling (VGG's 2x2) against reduce_window, forward and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxface.models import layers

DIMS = ("NHWC", "HWIO", "NHWC")

# (input NHWC, kernel, stride, padding, groups, out channels): the zoo's forms at tiny sizes.
CASES = {
    "resnet_stem_7x7s2p3": ((2, 20, 20, 3), 7, 2, ((3, 3), (3, 3)), 1, 8),
    "resnet_3x3_at_2x2": ((3, 2, 2, 16), 3, 1, ((1, 1), (1, 1)), 1, 16),
    "resnet_3x3s2p1": ((2, 8, 8, 8), 3, 2, ((1, 1), (1, 1)), 1, 16),
    "resnet_1x1s2_downsample": ((2, 8, 8, 8), 1, 2, ((0, 0), (0, 0)), 1, 16),
    "bottleneck_1x1": ((2, 5, 5, 8), 1, 1, ((0, 0), (0, 0)), 1, 12),
    "alexnet_11x11s4p2": ((1, 35, 35, 3), 11, 4, 2, 1, 8),
    "alexnet_caffe_5x5_groups2": ((2, 9, 9, 8), 5, 1, 2, 2, 12),
    "alexnet_caffe_3x3_groups2": ((2, 5, 5, 6), 3, 1, 1, 2, 4),
    "gilnet_7x7s4_valid": ((1, 31, 31, 3), 7, 4, "VALID", 1, 6),
    "vgg_3x3_same": ((2, 6, 6, 4), 3, 1, "SAME", 1, 5),
    "same_stride2_asymmetric": ((1, 8, 8, 3), 3, 2, "SAME", 1, 4),
    "mtcnn_2x2_valid": ((2, 4, 4, 6), 2, 1, "VALID", 1, 7),
    "mtcnn_1x1_head": ((1, 3, 5, 6), 1, 1, "SAME", 1, 2),
}


def _reference(x, w, stride, pads, groups):
  return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=DIMS,
                                  feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def _operands(case, rng, dtype=np.float32):
  shape, k, stride, padding, groups, cout = CASES[case]
  x = rng.normal(size=shape).astype(dtype)
  w = rng.normal(size=(k, k, shape[-1] // groups, cout)).astype(dtype)
  pads = layers.conv_pads(shape[1:3], (k, k), (stride, stride), padding)
  return x, w, stride, padding, pads, groups


def _value_and_vjp(fn):
  """jit(x, w, g -> (fn(x, w), dx, dw)) for the cotangent g: one compile per case."""
  def run(x, w, g):
    y, vjp = jax.vjp(fn, x, w)
    return (y, *vjp(g))
  return jax.jit(run)


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv2d_equals_conv_general_dilated_forward_and_gradients(rng, case):
  x, w, stride, padding, pads, groups = _operands(case, rng)
  kh, kw, cin_g, cout = w.shape
  ref_fn = lambda x, w: _reference(x, w, stride, pads, groups)  # noqa: E731
  y_shape = jax.eval_shape(ref_fn, x, w).shape
  g = rng.normal(size=y_shape).astype(np.float32)
  refs = _value_and_vjp(ref_fn)(x, w, g)
  # Two float32 sums of the same L products in different orders differ by at most
  # 2 * gamma_L * sum|terms| ~= L * eps * sum|terms| (Higham, Accuracy and Stability, 3.1), with
  # L the reduction length: kh*kw*Cin/groups for y, kh*kw*Cout/groups for dx (taps times output
  # channels touching an input pixel), B*Ho*Wo for dw. sum|terms| is the same linear map applied
  # to the absolute values.
  eps = float(np.finfo(np.float32).eps)
  abs_terms = _value_and_vjp(ref_fn)(np.abs(x), np.abs(w), np.abs(g))
  b, ho, wo, _ = y_shape
  lengths = (kh * kw * cin_g, kh * kw * cout // groups, b * ho * wo)
  for lowering in ("im2col", "tap_wgrad", "auto"):
    got = _value_and_vjp(lambda x, w: layers.conv2d(  # noqa: B023 - called in this iteration
        x, w, (stride, stride), padding, groups, lax.Precision.HIGHEST, lowering))(x, w, g)
    for name, a, ref, terms, length in zip(("y", "dx", "dw"), got, refs, abs_terms, lengths):
      assert a.shape == ref.shape and a.dtype == ref.dtype
      err = np.abs(np.asarray(a) - np.asarray(ref))
      assert np.all(err <= length * eps * np.asarray(terms)), (lowering, name, float(err.max()))


def test_im2col_is_used_where_the_rule_says():
  # The documented rule: never off the CPU; on the CPU 1x1 kernels, small outputs and large maps.
  rule = lambda shape, k, s, pad, backend="cpu": layers.choose_lowering(  # noqa: E731
      shape, (k, k, shape[-1], 8), (s, s), [(pad, pad)] * 2, backend)
  assert rule((64, 2, 2, 512), 3, 1, 1) == "im2col"  # the 80x-slower case of issue 16
  assert rule((64, 2, 2, 512), 3, 1, 1, backend="gpu") == "direct"
  assert rule((16, 56, 56, 64), 1, 1, 0) == "im2col"
  assert rule((16, 56, 56, 64), 1, 1, 0, backend="gpu") == "direct"
  assert rule((16, 224, 224, 3), 7, 2, 3) == "direct"  # the image stem
  assert rule((64, 8, 8, 64), 3, 1, 1) == "direct"  # mid-sized maps
  assert rule((16, 13, 13, 384), 3, 1, 1) == "direct"  # AlexNet's conv3-5 at 224 px
  side = int(np.sqrt(layers.IM2COL_MAX_OUTPUT_AREA))
  assert rule((1, side, side, 4), 3, 1, 1) == "im2col"
  assert rule((1, side + 1, side + 1, 4), 3, 1, 1) == "direct"
  # Large maps: the kernel gradient as matrix products, im2col while the patch matrix is small.
  assert rule((16, 56, 56, 64), 3, 1, 1) == "im2col"  # 7.2 MB of float32 patches an image
  assert rule((16, 56, 56, 64), 3, 1, 1, backend="gpu") == "direct"
  assert rule((64, 16, 16, 64), 3, 1, 1) == "im2col"
  assert rule((16, 28, 28, 512), 3, 1, 1) == "tap_wgrad"  # many channels: per-tap products
  assert rule((16, 14, 14, 512), 3, 1, 1) == "tap_wgrad"
  assert rule((16, 56, 56, 256), 3, 1, 1) == "tap_wgrad"
  assert rule((16, 224, 224, 64), 3, 1, 1) == "tap_wgrad"  # 115 MB of patches an image
  assert rule((16, 112, 112, 64), 3, 1, 1) == "tap_wgrad"  # 28.9 MB
  assert rule((16, 224, 224, 64), 3, 1, 1, backend="gpu") == "direct"
  assert rule((16, 28, 28, 8), 3, 1, 1) == "direct"  # too few channels per group
  # The batch never enters the choice (one device or eight, a symbolic export batch).
  for shape in ((16, 28, 28, 512), (16, 56, 56, 256), (16, 56, 56, 64), (16, 112, 112, 64)):
    assert {rule((b, *shape[1:]), 3, 1, 1) for b in (1, 2, 16, 128)} == {rule(shape, 3, 1, 1)}


@pytest.mark.parametrize("kwargs", [
    dict(features=6, kernel_size=(3, 3)),
    dict(features=6, kernel_size=(5, 5), strides=2, padding=2, use_bias=False),
    dict(features=6, kernel_size=(3, 3), padding=((1, 1), (1, 1)), feature_group_count=2,
         kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
         bias_init=nn.initializers.constant(0.5)),
    dict(features=2, kernel_size=(1, 1), padding="VALID"),
])
def test_conv_module_has_nn_conv_parameters_and_outputs(rng, kwargs):
  x = jnp.asarray(rng.normal(size=(2, 7, 7, 4)), jnp.float32)
  ours, theirs = layers.Conv(**kwargs), nn.Conv(**kwargs)
  v_ours = ours.init(jax.random.PRNGKey(3), x)
  v_theirs = theirs.init(jax.random.PRNGKey(3), x)
  # Same names, shapes and initial values: checkpoints and importers carry over unchanged.
  jax.tree_util.tree_map(np.testing.assert_array_equal, v_ours, v_theirs)
  for lowering in ("direct", "im2col"):
    y = layers.Conv(**kwargs, lowering=lowering).apply(v_theirs, x)
    y_ref = theirs.apply(v_theirs, x)
    k = v_theirs["params"]["kernel"]
    # Reduction length kh*kw*Cin/groups, float32 eps (as in the conv2d test), plus the bias add's
    # rounding (the two add the bias to results that differ by that bound).
    bound = ((k.shape[0] * k.shape[1] * k.shape[2] + 1) * np.finfo(np.float32).eps
             * (theirs.apply(jax.tree_util.tree_map(jnp.abs, v_theirs), jnp.abs(x))))
    assert np.all(np.abs(np.asarray(y) - np.asarray(y_ref)) <= np.asarray(bound))


def test_conv_module_computes_in_its_dtype(rng):
  x = jnp.asarray(rng.normal(size=(2, 3, 3, 8)), jnp.float32)
  conv = layers.Conv(4, (3, 3), dtype=jnp.bfloat16, lowering="im2col")
  v = conv.init(jax.random.PRNGKey(0), x)
  assert v["params"]["kernel"].dtype == jnp.float32  # parameters stay float32
  y = conv.apply(v, x)
  assert y.dtype == jnp.bfloat16
  y_ref = nn.Conv(4, (3, 3), dtype=jnp.bfloat16).apply(v, x)
  absval = nn.Conv(4, (3, 3)).apply(jax.tree_util.tree_map(jnp.abs, v), jnp.abs(x))
  # bfloat16 operands, accumulation and the final rounding: (L + 2) * bf16 eps * sum|terms|, L=72.
  bound = (72 + 2) * float(jnp.finfo(jnp.bfloat16).eps) * np.asarray(absval)
  err = np.abs(np.asarray(y, np.float32) - np.asarray(y_ref, np.float32))
  assert np.all(err <= bound)


def test_conv_rejects_bad_arguments():
  x = jnp.zeros((1, 4, 4, 6))
  with pytest.raises(ValueError, match="lowering must be one of"):
    layers.conv2d(x, jnp.zeros((3, 3, 6, 2)), lowering="winograd")
  with pytest.raises(ValueError, match="feature_group_count 4 must divide"):
    layers.Conv(2, (3, 3), feature_group_count=4).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="NHWC"):
    layers.Conv(2, (3, 3)).init(jax.random.PRNGKey(0), x[0])
  with pytest.raises(ValueError, match="CIRCULAR"):
    layers.conv2d(x, jnp.zeros((3, 3, 6, 2)), padding="CIRCULAR")


def test_the_chosen_lowering_is_the_program():
  x, w = jnp.zeros((2, 2, 2, 8)), jnp.zeros((3, 3, 8, 4))
  program = lambda: str(jax.make_jaxpr(  # noqa: E731
      lambda x, w: layers.Conv(4, (3, 3)).apply({"params": {"kernel": w, "bias": w[0, 0, 0]}},
                                                x))(x, w))
  assert "dot_general" in program() and "conv_general_dilated" not in program()
  with layers.force_lowering("direct"):
    assert "conv_general_dilated" in program() and "dot_general" not in program()
  assert "dot_general" in program()  # the rule again after the block
  with pytest.raises(ValueError, match="lowering must be one of"):
    with layers.force_lowering("auto"):
      pass


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 9, 7, 4), (1, 5, 6, 2)])
@pytest.mark.parametrize("k", [2, 3])
def test_tiled_max_pool_equals_reduce_window_with_ties(rng, shape, k):
  # Small integers make many ties (as ReLU's zeros do): the gradient must go to the same element
  # as reduce_window's select-and-scatter (the first maximum in row-major window order). Both
  # paths only copy and compare values, so forward and gradient are equal exactly. Odd sizes
  # check the floor crop (the last row / column outside every window gets zero gradient).
  x = jnp.asarray(rng.integers(-2, 3, size=shape), jnp.float32)
  ref = lambda x: nn.max_pool(x, (k, k), (k, k))  # noqa: E731
  y_ref, vjp_ref = jax.vjp(ref, x)
  y, vjp = jax.vjp(lambda x: layers._tiled_max_pool(x, k), x)
  g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
  # The public entry takes it on the CPU for tiling windows only (3x3 stride 2 overlaps).
  np.testing.assert_array_equal(layers.max_pool_floor(x, k, k), y_ref)
  program = str(jax.make_jaxpr(lambda x: layers.max_pool_floor(x, k, k))(x))
  assert ("reduce_window" in program) == (jax.default_backend() != "cpu")
  assert "reduce_window" in str(jax.make_jaxpr(lambda x: layers.max_pool_floor(x, 3, 2))(x))
