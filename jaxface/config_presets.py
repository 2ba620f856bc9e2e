"""Paper schedules shared by several config files (configs/ import only jaxface and
data_pipelines, so the shared parts live here).

Papers (cited by the configs that use these schedules):
* SAF-BAGE: A. Gurnani, K. Shah, V. Gajjar, V. Mavani, Y. Khandhediya, "SAF-BAGE: Salient Approach
  for Facial Soft-Biometric Classification - Age, Gender, and Facial Expression", WACV 2019,
  arXiv:1803.05719, doi:10.1109/WACV.2019.00094.
* Zhang et al.: K. Zhang, L. Tan, Z. Li, Y. Qiao, "Gender and Smile Classification using Deep
  Convolutional Neural Networks", CVPR Workshops (ChaLearn LAP) 2016, doi:10.1109/CVPRW.2016.97.
"""

from __future__ import annotations

import ml_collections

from jaxface import config_lib

ADIENCE_FOLDS = 5


def adience_splits(c: ml_collections.ConfigDict, fold: int) -> None:
  """Subject-exclusive 5-fold protocol: train on the four other folds, test on ``fold``.

  The protocol has no validation split; validation runs on the test fold only to log curves
  (model selection on it would leak, so evaluation uses the last checkpoint, not the best).
  """
  if not 0 <= fold < ADIENCE_FOLDS:
    raise config_lib.ConfigError(f"config argument fold={fold}: must be in 0..4")
  c.data.train_split = "+".join(f"fold{k}" for k in range(ADIENCE_FOLDS) if k != fold)
  c.data.eval_split = f"fold{fold}"
  c.data.test_split = f"fold{fold}"
  c.eval.split = f"fold{fold}"
  c.eval.checkpoint = "latest"
  c.best_metric = ""


SAF_BAGE_MODELS = {  # model -> the layers SAF-BAGE fine-tunes (section 3.3 and 4.3)
    "alexnet": ("^fc6/", "^fc7/", "^fc8/"),
    "vgg16": ("^fc8/",),  # the ablation: "only last fully-connected layer"
}


def saf_bage_adience(task: str, fold: int, r: float, init_from: str, mlnet: str,
                     smoke: bool, model: str = "alexnet", copies: int = 1
                     ) -> ml_collections.ConfigDict:
  """SAF-BAGE on Adience (section 3.3): AlexNet fc6-fc8 fine-tuned on saliency-reweighted crops.

  Face crop with a 30 % margin, 224 x 224; ML-Net saliency reweighting x * ((1 - r) + r * S)
  with r = 0.3; ImageNet AlexNet with only fc6, fc7, fc8 trained; 30 epochs, lr 0.001, dropout
  0.4, effective batch 128; SGD momentum 0.9 (AMBIGUOUS: the paper names no optimiser).
  ``model="vgg16"`` is the section 4.3 ablation, which trains "only [the] last fully-connected
  layer" (fc8).

  ``init_from``: the ImageNet model converted from torchvision's file (``python -m
  jaxface.convert torchvision alexnet-owt-7be5be79.pth /tmp/alexnet.npz``, or ``vgg16-397923af.pth``
  for ``model="vgg16"``). Carried over: conv1-conv5, fc6, fc7 (the default expectation
  ``init_from_expect=("backbone",)``, so a file without them fails at start); fc8 is new (8 age
  groups or 2 genders instead of 1000 classes). The frozen layers stay at exactly these weights.

  AMBIGUOUS, augmentation: the paper flips each image and rotates it by +3 and -3 degrees, "4
  times more data", for 30 epochs. Here each pass draws a random flip and a random angle in
  [-3, 3] (``copies=1``, 30 passes). ``copies=4`` trains as many updates as 30 epochs over the
  4x data (120 passes of random draws); the fixed set of four images itself would need a
  discrete-angle rotate op, which the pipes do not have.
  """
  if task not in ("age", "gender"):
    raise config_lib.ConfigError(f"config argument task={task!r}: must be age or gender")
  if model not in SAF_BAGE_MODELS:
    raise config_lib.ConfigError(f"config argument model={model!r}: one of "
                                 f"{', '.join(SAF_BAGE_MODELS)}")
  if copies not in (1, 4):
    raise config_lib.ConfigError(f"config argument copies={copies}: 1 (random draws) or 4 (the "
                                 "paper's 4x data as 4x the passes)")
  c = config_lib.base_config()
  c.name = f"saf_bage/adience_{task}/fold{fold}/r{r}"
  c.data.name, c.data.config = "adience", f"faces_{task}"
  c.data.labels = (task,)
  adience_splits(c, fold)
  saliency = r > 0
  crop = "decode|face_crop(0.3)|resize(224)"
  c.data.train_pipe = crop + ("|cached_saliency" if saliency else "") + "|flip_lr|rotate(3)" + (
      f"|saliency({r})" if saliency else "")
  c.data.eval_pipe = crop + (f"|cached_saliency|saliency({r})" if saliency else "")
  c.saliency.mode = "cache" if saliency else "none"
  c.saliency.r = r
  c.saliency.mlnet = mlnet
  c.saliency.crop_pipe = crop
  c.model.name = model
  c.model.kwargs.dropout_rate = 0.4
  c.model.preprocessing = "imagenet"
  c.init_from = init_from
  c.task.ordinal = ("age",)
  c.optim.name = "sgd"
  c.optim.lr = 0.001
  c.optim.momentum = 0.9
  c.optim.trainable = SAF_BAGE_MODELS[model]
  c.batch_size = 128
  c.train_epochs = 30.0 * copies
  c.eval_every_epochs = 5.0 * copies
  c.checkpoint_every_epochs = 1.0
  if smoke:
    config_lib.apply_smoke(c, labels=(task,))
    c.eval.split = "test"
  return c


def zhang_general_to_specific(attribute: str, step: int, crop: int, init_from: str,
                              smoke: bool) -> ml_collections.ConfigDict:
  """Zhang et al. (section 3.4): step 2, 3 or 4 for ``attribute`` "gender" (GNet) or "smile"
  (SNet).

  What ``init_from`` carries over at each step (jaxface/init_from.py maps ``backbone/X`` <-> ``X``):
  * step 2 from the converted VGG-Face file (``conv1_1`` ... ``fc8``): conv1_1-conv5_3, fc6, fc7
    into the attribute model's ``backbone/``; its head (``head/fc``, 40 logits) is new and the
    file's fc8 (2622 identities) unused. Expectation: the default ``("backbone",)``.
  * step 3 from step 2's workdir (``backbone/...``, ``head/...``): the same 30 arrays back at the
    top level; fc8 (2 classes) is new, step 2's head unused. Expectation ``("backbone",)``.
  * step 4 from step 3's workdir: every array, fc8 included (both steps have the same 2 classes
    in the same order, m / f or no / yes): ``init_from_expect = ("all",)``.
  """
  if step not in (2, 3, 4):
    raise config_lib.ConfigError(f"config argument step={step}: must be 2, 3 or 4")
  if not 1 <= crop <= 5:
    raise config_lib.ConfigError(f"config argument crop={crop}: crop schemes are 1..5")
  c = config_lib.base_config()
  c.name = f"zhang/{attribute}/crop{crop}/step{step}"
  crop_pipe = f"decode|detect(detector='mtcnn')|task_crop({crop}, size=224)"
  if step == 2:
    c.data.name, c.data.config, c.data.labels = "celeba", "aligned", ("attributes",)
    c.task.kind = "attributes"
    c.model.head = "attributes"
    c.optim.lr = 0.001
  elif step == 3:
    c.data.name, c.data.config, c.data.labels = "celeba", "aligned", (attribute,)
    c.optim.lr = 0.01
  else:
    c.data.name, c.data.config, c.data.labels = "fotw", "default", (attribute,)
    c.optim.lr = 0.01
  c.data.train_pipe = crop_pipe + "|flip_lr"
  c.data.eval_pipe = crop_pipe
  c.model.name = "vgg_face"
  c.model.kwargs.dropout_rate = 0.5
  c.model.preprocessing = "vggface"
  c.init_from = init_from
  if step == 4:  # step 3's network whole, its last layer included
    c.init_from_expect = ("all",)
  c.task.ordinal = ()
  last = "head/" if step == 2 else "fc8"
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "polynomial"
  c.optim.power = 1.0
  c.optim.lr_mult = ((r"conv\d_\d/", 0.1), (r"fc7/", 0.5), (last, 1.0))
  c.batch_size = 120
  c.train_steps = 110_000
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 2000
  c.best_metric = f"val/{c.data.labels[0]}/accuracy"
  if smoke:
    # The synthetic faces carry no 40-attribute vector, so step 2's smoke run trains the
    # softmax path on gender; the sigmoid attribute loss and head are covered by their own tests.
    config_lib.apply_smoke(c, labels=("gender",) if attribute == "gender" or step == 2
                           else ("expression",))
    c.data.train_pipe = c.data.train_pipe.replace("detect(detector='mtcnn')|", "")
    c.data.eval_pipe = c.data.eval_pipe.replace("detect(detector='mtcnn')|", "")
    if step == 2:
      c.task.kind, c.model.head = "class", ""
      c.optim.lr_mult = ((r"conv\d_\d/", 0.1), (r"fc7/", 0.5), ("fc8/", 1.0))
    c.best_metric = f"val/{c.data.labels[0]}/accuracy"
  return c
