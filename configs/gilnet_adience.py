"""Levi & Hassner's GilNet on Adience age or gender (the SAF-BAGE ablation baseline).

Paper: GilNet (Levi & Hassner, CVPR-W 2015), reported by SAF-BAGE
(../shared/papers/000_5a6047cae2fd1f56.txt) as 89.8 +- 1.3 % on Adience gender; Levi & Hassner
report 50.7 +- 5.1 % exact age (84.7 % one-off) and 86.8 +- 1.4 % gender with over-sampling.

Settings (SPEC 4.2): Adience aligned/ faces resized to 256 x 256 (aspect ignored); random 227 crop
and mirror; Caffe BGR input minus a mean (AMBIGUOUS: the per-fold mean image is replaced by the
ImageNet per-channel mean; both centre the data); batch 50; SGD lr 1e-3, x0.1 every 10,000
iterations, 50,000 iterations, momentum 0.9, weight decay 5e-4 (on all parameters as Caffe's
decay_mult 1, biases 0 in the prototxt: we decay kernels only); test by over-sampling (4 corners,
centre and their mirrors, softmax averaged).

Commands:
  python -m data_pipelines.build adience --config aligned_gender --manual_dir ~/data/adience
  for k in 0 1 2 3 4; do python -m jaxface.train --config configs/gilnet_adience.py:task=gender,fold=$k \
      --workdir /tmp/gilnet_gender/fold$k; done
  python -m jaxface.evaluate --folds /tmp/gilnet_gender/fold0,...,/tmp/gilnet_gender/fold4
Arguments: task (age | gender), fold (0), smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, task="gender", fold=0)
  if arg.task not in ("age", "gender"):
    raise config_lib.ConfigError(f"config argument task={arg.task!r}: must be age or gender")
  c = config_lib.base_config()
  c.name = f"gilnet/adience_{arg.task}/fold{arg.fold}"
  c.data.name, c.data.config = "adience", f"aligned_{arg.task}"
  c.data.labels = (arg.task,)
  config_presets.adience_splits(c, arg.fold)
  c.data.train_pipe = "decode|resize(256)|random_crop(227)|flip_lr"
  c.data.eval_pipe = "decode|resize(256)|oversample10(227)"
  c.model.name = "gilnet"
  c.model.kwargs = ml_collections.ConfigDict(dict(dropout_rate=0.5), type_safe=False)
  c.model.preprocessing = "caffe_bgr"
  c.model.input_size = (227, 227)
  c.task.ordinal = ("age",)
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "step"
  c.optim.boundaries_steps = (10000, 20000, 30000, 40000)
  c.batch_size = 50
  c.train_steps = 50000
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  if arg.smoke:
    config_lib.apply_smoke(c, labels=(arg.task,))
    c.eval.split = "test"
    c.optim.boundaries_steps = (1,)
  return config_lib.finalize(c)
