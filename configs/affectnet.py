"""SAF-BAGE on AffectNet: saliency-reweighted AlexNet, 7 expressions.

Paper: A. Gurnani, K. Shah, V. Gajjar, V. Mavani, Y. Khandhediya, "SAF-BAGE: Salient Approach for
Facial Soft-Biometric Classification - Age, Gender, and Facial Expression", WACV 2019,
arXiv:1803.05719. Table 6 (AffectNet, 7 classes): reported accuracy 67.65 % with saliency
(59.2 % without, i.e. ``:r=0``); Table 5 is its confusion matrix, Table 1 the split.

Settings (paper sections 3.1-3.3): AffectNet 7 classes with the paper's own split (the
``7class_saf_bage`` builder config: 80/20 seeded split of the training csv's 7-class rows, test =
the official validation set, 500 per class); face crop with 30 % margin from the stored box, 224 x 224;
ML-Net saliency (SALICON weights) with r = 0.3 from the saliency cache; ImageNet AlexNet with
a 7-way softmax; class-weighted cross-entropy; no augmentation; conv5, fc6, fc7, fc8 fine-tuned
(the rest frozen); 40 epochs, SGD momentum 0.9, lr 0.001 divided by 10 after epoch 30; batch 128;
dropout 0.35. ``init_from`` carries conv1-conv5, fc6, fc7 over from the ImageNet file (the
default ``init_from_expect=("backbone",)``: a file without them fails at start); fc8 (7 classes)
is new. AMBIGUOUS: the paper does not name its class-weight formula; we use scikit-learn's
"balanced" n / (k * count) (``--config.task.class_weights=inverse`` for max/count).

Command:
  python -m data_pipelines.build affectnet --config 7class_saf_bage --manual_dir ~/data/AffectNet
  python -m jaxface.convert torchvision alexnet-owt-7be5be79.pth /tmp/alexnet.npz
  python -m jaxface.convert mlnet_theano mlnet_salicon_weights.pkl /tmp/mlnet.npz
  python -m jaxface.train --config configs/affectnet.py:init_from=/tmp/alexnet.npz,mlnet=/tmp/mlnet.npz \
      --workdir /tmp/affectnet
  python -m jaxface.evaluate --workdir /tmp/affectnet
Arguments: r (0.3; 0 = no saliency), init_from, mlnet, smoke.
"""

import ml_collections

from jaxface import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, r=0.3, init_from="", mlnet="")
  c = config_lib.base_config()
  c.name = "saf_bage/affectnet"
  c.data.name, c.data.config = "affectnet", "7class_saf_bage"
  c.data.labels = ("expression",)
  saliency = arg.r > 0
  tail = f"|cached_saliency|saliency({arg.r})" if saliency else ""
  c.data.train_pipe = "decode|face_crop(0.3)|resize(224)" + tail
  c.data.eval_pipe = "decode|face_crop(0.3)|resize(224)" + tail
  c.saliency.mode = "cache" if saliency else "none"
  c.saliency.r = arg.r
  c.saliency.mlnet = arg.mlnet
  c.saliency.crop_pipe = "decode|face_crop(0.3)|resize(224)"
  c.model.name = "alexnet"
  c.model.kwargs.dropout_rate = 0.35
  c.model.preprocessing = "imagenet"
  c.init_from = arg.init_from
  c.task.class_weights = "balanced"
  c.task.ordinal = ()
  c.optim.name = "sgd"
  c.optim.lr = 0.001
  c.optim.momentum = 0.9
  c.optim.schedule = "step"
  c.optim.boundaries_epochs = (30.0,)
  c.optim.trainable = ("conv5", "fc6", "fc7", "fc8")
  c.batch_size = 128
  c.train_epochs = 40.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 1.0
  c.best_metric = "val/expression/accuracy"
  if arg.smoke:
    config_lib.apply_smoke(c, labels=("expression",))
  return config_lib.finalize(c)
