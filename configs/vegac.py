"""VEGAC: saliency-reweighted VGG-16 for age, gender and expression.

Paper: A. Gurnani, V. Gajjar, V. Mavani, Y. Khandhediya, "VEGAC: Visual Saliency-based Age,
Gender, and Facial Expression Classification Using Convolutional Neural Networks", arXiv preprint,
2018. Reported: Adience age 60.8 % (Table 2), gender 88.9 % on Adience (Table 4) and 96.8 % on
LFW (Table 5), AffectNet expression 72.2 % (Table 7); Table 1 gives the splits.

Settings (paper sections 3.1, 3.4): face crop with 30 % margin, 224 x 224; ML-Net saliency with
"image 100 %, salient image 70 %", i.e. r = 0.7; ImageNet VGG-16 with a new softmax (8 / 2 / 7),
"the first 10 layers" frozen, dropout 0.5, Adam lr 0.001 for 50 epochs then divided by 10
every 10 epochs, 80 epochs, random rotation up to +-5 degrees. Data: age on Adience; gender, as
the paper did (Table 1, section 4.2 "adding LFW"), on one mixture of Adience and LFW
(``dataset=adience+lfw``, the default; ``jaxface.mixture``): both training splits train one
model, both validation splits validate it, and the test reports the whole mixture and each
dataset apart (``results["per_dataset"]["adience"]["gender"]``: the paper's 88.9 %, ``["lfw"]``:
its 96.8 %). Both datasets' m / f map onto the classes ("male", "female"). The other reading, one
dataset per model: ``dataset=adience`` or ``dataset=lfw``. Expression on AffectNet with VEGAC's
split (``7class_vegac``: 65/15/20 of all 7-class images, seeded). AMBIGUOUS: the paper's Adience
split (17,334 / 5,748 / 3,498) is not published; we use folds 0-2 / 3 / 4 (subject-exclusive)
and the batch size is not given (we use 32). AMBIGUOUS, "the first 10 layers" (Keras): the ten
convolutions conv1_1 .. conv4_3 (``frozen=convs``, the default), or Keras' ``model.layers[:10]``
of its VGG16, which counts the input and the pooling layers and so stops at block3_conv3, i.e.
conv1_1 .. conv3_3 (``frozen=keras``).

Commands:
  python -m jaxface.convert torchvision vgg16-397923af.pth /tmp/vgg16.npz
  python -m jaxface.train --config configs/vegac.py:task=gender,init_from=/tmp/vgg16.npz,mlnet=/tmp/mlnet.npz \
      --config.data.mixture.datasets.adience.manual_dir=/data/adience \
      --config.data.mixture.datasets.lfw.manual_dir=/data/lfw --workdir /tmp/vegac_gender
  python -m jaxface.evaluate --workdir /tmp/vegac_gender
Arguments: task (age | gender | expression), dataset (gender: adience+lfw (default) | adience |
lfw), r (0.7), frozen (convs | keras), init_from, mlnet, smoke.
"""

import ml_collections

from jaxface import config_lib

FROZEN = {  # argument frozen -> the VGG-16 layers kept at their ImageNet weights
    "convs": ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3"),
    # Keras VGG16().layers[:10]: input, block1_conv1/2, block1_pool, block2_conv1/2, block2_pool,
    # block3_conv1/2/3.
    "keras": ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3"),
}
DATA = {  # task -> (dataset, config, splits (train, validation, test), label)
    # Adience: the face detected once at build time (data_pipelines.datasets.detect)
    "age": ("adience", "faces_age_mtcnn", ("fold0+fold1+fold2", "fold3", "fold4"), "age"),
    "gender": ("adience", "faces_gender_mtcnn", ("fold0+fold1+fold2", "fold3", "fold4"), "gender"),
    "expression": ("affectnet", "7class_vegac", ("train", "validation", "test"), "expression"),
}
LFW = ("lfw_gender", "lfw", ("train", "validation", "test"))
GENDER_DATASETS = ("adience+lfw", "adience", "lfw")
GENDER_CLASSES = ("male", "female")  # the mixture's classes; both datasets label m / f


def gender_mixture(c: ml_collections.ConfigDict) -> None:
  """Adience + LFW as one gender dataset (the VEGAC paper, Table 1: 23,611 / 7,153 / 9,049)."""
  c.data.name, c.data.config, c.data.manual_dir = "mixture", "", ""
  c.data.train_split, c.data.eval_split, c.data.test_split = "train", "validation", "test"
  c.data.mixture.classes.gender = GENDER_CLASSES
  for entry, (name, cfg, splits) in (("adience", DATA["gender"][:3]), ("lfw", LFW)):
    c.data.mixture.datasets[entry] = dict(
        name=name, config=cfg, manual_dir="",
        splits=dict(zip(("train", "validation", "test"), splits)),
        labels=dict(gender=dict(m="male", f="female")), rate=1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, task="gender", dataset="", r=0.7, frozen="convs",
                             init_from="", mlnet="")
  if arg.task not in DATA:
    raise config_lib.ConfigError(f"config argument task={arg.task!r}: one of {sorted(DATA)}")
  if arg.frozen not in FROZEN:
    raise config_lib.ConfigError(f"config argument frozen={arg.frozen!r}: one of "
                                 f"{', '.join(FROZEN)}")
  name, cfg, (train, val, test), label = DATA[arg.task]
  dataset = arg.dataset or ("adience+lfw" if arg.task == "gender" else name)
  if arg.task != "gender" and dataset != name:
    raise config_lib.ConfigError(f"config argument dataset={arg.dataset!r}: task={arg.task} "
                                 f"trains on {name} (dataset= chooses for task=gender only)")
  if arg.task == "gender" and dataset not in GENDER_DATASETS:
    raise config_lib.ConfigError(f"config argument dataset={arg.dataset!r}: one of "
                                 f"{', '.join(GENDER_DATASETS)}")
  if dataset == "lfw":
    name, cfg, (train, val, test) = LFW
  c = config_lib.base_config()
  c.name = f"vegac/{arg.task}/{dataset}"
  c.data.name, c.data.config = name, cfg
  c.data.train_split, c.data.eval_split, c.data.test_split = train, val, test
  c.data.labels = (label,)
  if dataset == "adience+lfw":
    gender_mixture(c)
    test = c.data.test_split
  crop = "decode|face_crop(0.3)|resize(224)"
  c.data.train_pipe = crop + f"|cached_saliency|rotate(5)|saliency({arg.r})"
  c.data.eval_pipe = crop + f"|cached_saliency|saliency({arg.r})"
  c.saliency.mode, c.saliency.r, c.saliency.mlnet, c.saliency.crop_pipe = (
      "cache", arg.r, arg.mlnet, crop)
  c.model.name = "vgg16"
  c.model.kwargs.dropout_rate = 0.5
  c.model.preprocessing = "imagenet"
  c.init_from = arg.init_from
  c.optim.name = "adam"
  c.optim.lr = 0.001
  c.optim.schedule = "step"
  c.optim.boundaries_epochs = (50.0, 60.0, 70.0)
  c.optim.freeze = tuple(f"^{n}/" for n in FROZEN[arg.frozen])
  c.batch_size = 32
  c.train_epochs = 80.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 1.0
  c.best_metric = f"val/{label}/accuracy"
  c.eval.split = test
  if arg.smoke:
    config_lib.apply_smoke(c, labels=(label,))
    if dataset == "adience+lfw":  # the smoke run's synthetic data replace both datasets
      c.data.mixture.classes = ml_collections.ConfigDict({}, type_safe=False)
      c.data.mixture.datasets = ml_collections.ConfigDict({}, type_safe=False)
  return config_lib.finalize(c)
