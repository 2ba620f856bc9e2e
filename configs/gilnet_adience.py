"""Levi & Hassner's GilNet on Adience age or gender, as published and as SAF-BAGE's ablation.

Papers: G. Levi, T. Hassner, "Age and Gender Classification using Convolutional Neural Networks",
CVPR Workshops (AMFG) 2015, doi:10.1109/CVPRW.2015.7301352: 50.7 +- 5.1 % exact age (84.7 %
one-off) and 86.8 +- 1.4 % gender with over-sampling (``:r=0``, the default). A. Gurnani et al.,
"SAF-BAGE: Salient Approach for Facial Soft-Biometric Classification - Age, Gender, and Facial
Expression", WACV 2019, arXiv:1803.05719, section 4.3: GilNet inside SAF-BAGE's saliency pipeline,
89.8 +- 1.3 % on Adience gender (``:r=0.3,mlnet=...``). Both report mean +- standard error over
the five folds (``jaxface.evaluate --folds`` gives it as ``stderr``, with the sample ``std``).

Settings (the authors' Caffe train_val prototxt and solver, GilLevi/AgeGenderDeepLearning):
Adience aligned/ faces resized to 256 x 256 (aspect ignored); random 227 crop and mirror; Caffe
BGR input minus a mean (AMBIGUOUS: the per-fold mean image is replaced by the ImageNet
per-channel mean; both centre the data); batch 50; SGD lr 1e-3, x0.1 every 10,000 iterations,
50,000 iterations, momentum 0.9, weight decay 5e-4 (on all parameters as Caffe's decay_mult 1,
biases 0 in the prototxt: we decay kernels only); Caffe's per-blob learning-rate multipliers,
weights 1 / biases 2 and fc8 10 / 20 (``optim.lr_mult``); test by over-sampling (4 corners,
centre and their mirrors, softmax averaged).

With ``r > 0`` (SAF-BAGE's ablation) each 256 x 256 face is reweighted by its cached ML-Net map,
x * ((1 - r) + r * S), before the crops. AMBIGUOUS: SAF-BAGE does not say which faces or crops
its GilNet saw; here Levi & Hassner's own (aligned faces, 227 crops, over-sampling), with the
saliency of the whole 256 x 256 face.

Starting point: from scratch, as Levi & Hassner train (SAF-BAGE does not say). Our option:
``:init_from=/tmp/gender_net.npz``, the authors' released Caffe model converted with
``python -m jaxface.convert caffemodel gender_net.caffemodel /tmp/gender_net.npz`` (``age_net``
for age): conv1-conv3, fc6, fc7 carry over (the default ``init_from_expect=("backbone",)``: a
file without them fails at start), fc8 too when the file is the same task's (2 or 8 classes).
The released networks were trained on Adience, so a test fold may have been seen in training.

Commands:
  python -m data_pipelines.build adience --config aligned_gender --manual_dir ~/data/adience
  for k in 0 1 2 3 4; do python -m jaxface.train --config configs/gilnet_adience.py:task=gender,fold=$k \
      --workdir /tmp/gilnet_gender/fold$k; done
  python -m jaxface.evaluate --folds /tmp/gilnet_gender/fold0,...,/tmp/gilnet_gender/fold4
  SAF-BAGE's ablation: the same with ``:task=gender,fold=$k,r=0.3,mlnet=/tmp/mlnet.npz`` (the
  trainer fills the saliency cache before the first step).
Arguments: task (age | gender), fold (0), r (0: no saliency; SAF-BAGE used 0.3), mlnet, init_from
(""), smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, task="gender", fold=0, r=0.0, mlnet="", init_from="")
  if arg.task not in ("age", "gender"):
    raise config_lib.ConfigError(f"config argument task={arg.task!r}: must be age or gender")
  if not 0.0 <= arg.r <= 1.0:
    raise config_lib.ConfigError(f"config argument r={arg.r}: must be in [0, 1]")
  c = config_lib.base_config()
  c.name = f"gilnet/adience_{arg.task}/fold{arg.fold}" + (f"/r{arg.r}" if arg.r > 0 else "")
  c.data.name, c.data.config = "adience", f"aligned_{arg.task}"
  c.data.labels = (arg.task,)
  config_presets.adience_splits(c, arg.fold)
  face = "decode|resize(256)"
  reweight = f"|cached_saliency|saliency({arg.r})" if arg.r > 0 else ""
  c.data.train_pipe = face + reweight + "|random_crop(227)|flip_lr"
  c.data.eval_pipe = face + reweight + "|oversample10(227)"
  c.saliency.mode = "cache" if arg.r > 0 else "none"
  c.saliency.r = arg.r
  c.saliency.mlnet = arg.mlnet
  c.saliency.crop_pipe = face
  c.model.name = "gilnet"
  c.model.kwargs = ml_collections.ConfigDict(dict(dropout_rate=0.5), type_safe=False)
  c.model.preprocessing = "caffe_bgr"
  c.model.input_size = (227, 227)
  c.init_from = arg.init_from
  c.task.ordinal = ("age",)
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "step"
  c.optim.boundaries_steps = (10000, 20000, 30000, 40000)
  # Caffe blobs_lr, first match wins: fc8 weights 10 / biases 20, every other bias 2 (weights 1).
  c.optim.lr_mult = (("^fc8/bias", 20.0), ("^fc8/", 10.0), ("/bias$", 2.0))
  c.batch_size = 50
  c.train_steps = 50000
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  if arg.smoke:
    config_lib.apply_smoke(c, labels=(arg.task,))
    c.eval.split = "test"
    c.optim.boundaries_steps = (1,)
    # Plain rates in the smoke run only: tests/launch_test.py compares its two-process parameters
    # with one process' within a floor that the 2x rate on near-zero biases exceeds through
    # reduction-order noise alone; the multipliers are checked in tests/config_test.py.
    c.optim.lr_mult = ()
    if arg.r > 0:  # the cached maps are of the resized face, at the size apply_smoke gave it
      c.saliency.crop_pipe = "|".join(c.data.train_pipe.split("|")[:2])
  if arg.r > 0:
    # The evaluator's sample grid puts the cached 256 x 256 face beside the 227 x 227 view it
    # classified and cannot stack tiles of two sizes yet: no grid for this reading.
    c.eval.num_sample_images = 0
  return config_lib.finalize(c)
