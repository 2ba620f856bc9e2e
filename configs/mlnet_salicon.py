"""ML-Net trained on SALICON (the saliency module of SAF-BAGE and VEGAC).

Paper: M. Cornia, L. Baraldi, G. Serra, R. Cucchiara, "A Deep Multi-Level Network for Saliency
Prediction", ICPR 2016, arXiv:1609.01064, as used by SAF-BAGE (WACV 2019, arXiv:1803.05719) and
VEGAC (Gurnani et al., 2018). The reference reports SALICON validation metrics for the released
weights; this config retrains them.

Settings (the authors' released Keras code: config.py, utilities.py, main.py): 480 x 640 BGR input
minus the ImageNet mean, ground-truth maps at the output resolution (60 x 80) divided by 255, ML-Net
loss with alpha 1.1 plus the prior regulariser; Keras-1 SGD lr 1e-3 with time decay 5e-4 (a
learning-rate decay, not weight decay: AMBIGUOUS, the code's reading), momentum 0.9, Nesterov; batch
10; 20 epochs (the reference stops early with patience 5 on the validation loss; here the best
checkpoint by validation loss is kept); conv layers start from ImageNet VGG-16 (``init_from``).

Commands:
  python -m data_pipelines.build salicon --config png --manual_dir ~/data/salicon
  python -m jaxface.convert vgg16_theano vgg16_weights.h5 /tmp/vgg16_keras.npz
  python -m jaxface.train --config configs/mlnet_salicon.py:init_from=/tmp/vgg16_keras.npz \
      --workdir /tmp/mlnet
Arguments: init_from, smoke.
"""

import ml_collections

from jaxface import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, init_from="")
  c = config_lib.base_config()
  c.name = "mlnet/salicon"
  c.data.name, c.data.config = "salicon", "png"
  c.data.eval_split = "validation"
  c.data.test_split = "validation"
  c.data.labels = ()
  c.data.train_pipe = "decode|resize((480, 640))"
  c.data.eval_pipe = "decode|resize((480, 640))"
  c.task.kind = "saliency"
  c.model.name = "mlnet"
  c.model.kwargs = ml_collections.ConfigDict(dict(dropout_rate=0.5), type_safe=False)
  c.model.preprocessing = "caffe_bgr"
  c.model.input_size = (480, 640)
  c.init_from = arg.init_from
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.schedule = "keras_time"
  c.optim.decay = 5e-4
  c.batch_size = 10
  c.train_epochs = 20.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 1.0
  c.best_metric = "val/saliency/loss"
  c.best_mode = "min"
  c.eval.split = "validation"
  c.eval.num_sample_images = 4
  if arg.smoke:
    config_lib.apply_smoke(c, size=32)
    c.data.train_pipe = "decode|face_crop(0.3)|resize(32)"
    c.data.eval_pipe = "decode|face_crop(0.3)|resize(32)"
    c.model.kwargs.prior_shape = (2, 2)
  return config_lib.finalize(c)
