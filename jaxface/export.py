"""Serializes a model's inference function with ``jax.export`` (batch-polymorphic).

  python -m jaxface.export --model pretrained:gender --out gender.jaxexport [--platforms cpu,cuda]
  python -m jaxface.export --workdir runs/demo/classifier [--checkpoint best] --out demo.jaxexport
  python -m jaxface.export --model converted.npz --out model.jaxexport

The default lowers for both the CPU and CUDA GPUs (lowering needs no GPU).

The artifact maps uint8 face chips (B, H, W, C) to class probabilities (B, classes) for any batch
size B (a pretrained model), or to ``{task: probabilities}`` (a trained workdir or a converted
``.npz``, loaded with ``jaxface.load``: every task of a multi-task run, and the run's ML-Net
saliency reweighting when it trained with one); the input normalisation and the weights are
inside it. ``FILE.json`` beside it holds what
the caller must do before (the chip geometry, colour, input size) and what the outputs mean
(classes, per-class values such as years), plus the normalisation for reference. Reload with
``load(FILE)`` (only JAX needed, not jaxface's model code):

  exported, record = jaxface.export.load("gender.jaxexport")
  probs = exported.call(chips_uint8)
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import cli
from jaxface import pretrained

FORMAT = "jaxface.export/1"


def export_pretrained(name: str, platforms: Sequence[str] = ("cpu",)):
  """(jax.export.Exported, record) of pretrained model ``name`` (``pretrained:`` allowed)."""
  loaded = pretrained.load(name)
  spec = loaded.spec
  prep = spec.preprocessing
  h, w = prep.input_size
  channels = 1 if spec.colour == "gray" else 3
  scale = jnp.float32(prep.scale)
  mean = jnp.asarray(prep.mean, jnp.float32)
  std = jnp.asarray(prep.std, jnp.float32)
  variables = jax.tree.map(jnp.asarray, loaded.variables)

  def infer(chips_BHWC):
    x = (chips_BHWC.astype(jnp.float32) * scale - mean) / std
    logits, _ = loaded.model.apply(variables, x)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  (b,) = jax.export.symbolic_shape("b")
  arg = jax.ShapeDtypeStruct((b, h, w, channels), jnp.uint8)
  exported = jax.export.export(jax.jit(infer), platforms=tuple(platforms))(arg)
  record = {"format": FORMAT, "model": f"pretrained:{spec.name}", "task": spec.task,
            "architecture": spec.model, "input": {"dtype": "uint8", "shape": ["B", h, w, channels],
                                                  "colour": spec.colour, "chip": spec.chip},
            "normalisation_inside": prep.to_dict(), "classes": list(spec.classes),
            "class_values": list(spec.class_values) if spec.class_values else None,
            "source": spec.source, "source_sha256": spec.source_sha256, "licence": spec.licence,
            "platforms": list(platforms), "jax_version": jax.__version__}
  return exported, record


def export_trained(source: str, checkpoint: str | int | None = "best",
                   platforms: Sequence[str] = ("cpu",)):
  """(jax.export.Exported, record) of a training workdir or a converted ``.npz``."""
  from jaxface import trained as trained_lib  # pylint: disable=g-import-not-at-top
  m = trained_lib.load(source, checkpoint)
  # Host copies: the artifact embeds the weights as constants, whatever devices restored them.
  variables = jax.tree.map(np.asarray, jax.device_get(m.variables))
  h, w = m.input_size

  def infer(chips_BHWC):
    return m._step(variables, chips_BHWC)  # pylint: disable=protected-access

  (b,) = jax.export.symbolic_shape("b")
  arg = jax.ShapeDtypeStruct((b, h, w, m.channels), jnp.uint8)
  exported = jax.export.export(jax.jit(infer), platforms=tuple(platforms))(arg)
  record = {"format": FORMAT, "model": m.source, "step": m.step,
            "architecture": type(m.model).__name__,
            "input": {"dtype": "uint8", "shape": ["B", h, w, m.channels],
                      "colour": "gray" if m.channels == 1 else "RGB",
                      "chip": "as the run's eval pipe cuts it"},
            "normalisation_inside": m.preprocessing.to_dict(),
            "saliency_inside": None if m.saliency is None else {
                "r": m.saliency.r, "mlnet": m.saliency.mlnet,
                "mlnet_input": list(m.saliency.mlnet_input)},
            "outputs": {t.name: {"kind": t.kind, "classes": list(t.class_names),
                                 "class_values": list(m.class_values.get(t.name, ())) or None}
                        for t in m.tasks},
            "platforms": list(platforms), "jax_version": jax.__version__}
  return exported, record


def save(path: str, exported, record: dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  with open(f"{path}.json", "w") as f:
    json.dump(record, f, indent=1)


def load(path: str):
  """(jax.export.Exported, record) written by :func:`save`."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(f"{path}.json") as f:
    record = json.load(f)
  return exported, record


def main(argv=None) -> int:
  parser = cli.Parser(prog="python -m jaxface.export", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--model", help=f"pretrained:NAME with NAME in {', '.join(pretrained.names())}"
                     ", or a converted .npz (python -m jaxface.convert)")
  which.add_argument("--workdir", help="a jaxface.train workdir (every task of the run)")
  parser.add_argument("--checkpoint", default="best",
                      help="with --workdir: best (latest if the run kept none), latest or a step")
  parser.add_argument("--out", required=True, metavar="FILE", help="serialized function")
  parser.add_argument("--platforms", default="cpu,cuda",
                      help="comma list of platforms to lower for (cpu, cuda, rocm, tpu)")
  args = parser.parse_args(argv)
  if args.workdir is not None:
    if not os.path.isfile(os.path.join(args.workdir, "config.json")):
      parser.error(f"--workdir {args.workdir}: not a jaxface.train workdir (no config.json)")
  elif args.model.startswith("pretrained:"):
    try:
      pretrained.get(args.model)
    except KeyError as e:
      parser.error(str(e).strip("'\""))
  elif not (args.model.endswith(".npz") and os.path.isfile(args.model)):
    parser.error(f"--model must be pretrained:NAME or an existing converted .npz, got "
                 f"{args.model!r} (a training run: --workdir)")
  platforms = [p for p in args.platforms.split(",") if p]
  bad = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
  if bad or not platforms:
    parser.error(f"unknown platform {bad[0] if bad else '(none)'!r}; use cpu, cuda, rocm, tpu")
  if args.model is not None and args.model.startswith("pretrained:"):
    exported, record = export_pretrained(args.model, platforms)
    outputs = f"{len(record['classes'])} probabilities"
  else:
    exported, record = export_trained(args.workdir or args.model, args.checkpoint, platforms)
    outputs = ", ".join(f"{k} ({len(v['classes']) or 'map'})" for k, v in record["outputs"].items())
  save(args.out, exported, record)
  print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes) and {args.out}.json: "
        f"{record['model']} uint8 {record['input']['shape']} -> {outputs} on "
        f"{', '.join(platforms)}")
  return 0


if __name__ == "__main__":
  cli.run(main)
