"""Canonical Saliency Maps: the CMS experiment on a CelebA attribute model (gender by default).

Paper: T. A. John, V. N. Balasubramanian, C. V. Jawahar, "Canonical Saliency Maps: Decoding Deep
Face Models", IEEE Transactions on Biometrics, Behavior, and Identity Science 3(4), 2021
(arXiv:2105.01386). Sec. IV-A1 fine-tunes VGG-Face on CelebA for gender (and four other tasks),
draws the Canonical Model Saliency (CMS) map of each model (Fig. 1: the gender model looks at the
eye corners, Sec. V-B: eye make-up), and Sec. IV-B scores Grad-CAM, Grad-CAM++, Score-CAM and the
CMS re-projected onto each face by Average Drop %, % Increase and Win % on negative explanation
images (Fig. 10). CIS: 15 x 15 patches (Sec. V-E); the CMS is the mean CIS (eq. 6), stable after
about 1000 images (Fig. 5).

This config trains the model; ``python -m jaxface.explain`` draws the maps (commands below).

Settings: VGG-Face (imported identification weights, ``init_from``) fine-tuned on CelebA's
aligned crops (``celeba/aligned``, train / validation / test = CelebA's partition) for ``Male``
(``gender``) or ``Smiling`` (``smile``, a CelebA attribute the paper does not use); faces cut as
``python -m jaxface.explain --faces mtcnn`` cuts them (MTCNN's largest face, its box 30 % larger
and square, 224 px), so the explained crops are the trained ones; VGG-Face preprocessing.
``init_from`` carries conv1_1 .. conv5_3, fc6, fc7 over from the converted VGG-Face file (the
default ``init_from_expect=("backbone",)``: a file without them fails at start); fc8 (2 classes
instead of 2622 identities) is new.

AMBIGUOUS (the training details are in the paper's supplement, not in its text; each choice an
option): SGD momentum 0.9, lr 0.001 (``--config.optim.lr``) with 0.1 on the convolutions
(fine-tuning; ``--config.optim.lr_mult='()'`` for one lr), weight decay 5e-4, batch 64, 6 epochs
with a 10x step after epoch 4, horizontal flips, the best checkpoint by validation accuracy.

Where this differs from the paper: the correspondence to the canonical face comes from landmarks
(five MTCNN points, or dlib's 68 with ``--points 68`` and the ``dlib`` extra) with a piecewise
affine map, not PRNet's 3D fit (``--vertices DIR --canonical FILE`` takes PRNet meshes computed
elsewhere, the paper's setting); the age, pose and expression models need labels from other
models (DEX, PRNet, a FER model) and have no config; the test images are 1000 random CelebA test
faces (the paper's 22,000-image CelebA subset is larger than ``jaxface.explain`` holds in memory:
about 1 GB per 1000 faces at 224 px).

Commands (CelebA unpacked flat in ~/data/celeba: img_align_celeba/ and the list_*.txt files):
  python -m jaxface.convert keras_vggface vgg_face_weights.h5 /tmp/vggface.npz
  python -m data_pipelines.build celeba --config aligned --manual_dir ~/data/celeba
  python -m jaxface.train --config configs/csm.py:init_from=/tmp/vggface.npz --workdir /tmp/csm_gender
  python -m jaxface.evaluate --workdir /tmp/csm_gender
  mkdir -p /tmp/celeba_test && awk '$2 == 2 {print $1}' ~/data/celeba/list_eval_partition.txt \
    | shuf -n 1000 --random-source=<(yes) \
    | xargs -I{} ln -sf ~/data/celeba/img_align_celeba/{} /tmp/celeba_test/{}
  python -m jaxface.explain --workdir /tmp/csm_gender --method cms --images /tmp/celeba_test \
    --faces mtcnn --out /tmp/csm_gender/cms            # Fig. 1: cms.png, cms.npy, cms_coverage.png
  python -m jaxface.explain --workdir /tmp/csm_gender --method gradcam,gradcampp,scorecam,cms \
    --images /tmp/celeba_test --faces mtcnn --metrics --out /tmp/csm_gender/fig10   # metrics.md
  (``--sanity`` adds the cascading randomisation check of Fig. 8 for the CAMs.)
Arguments: attribute (gender | smile), model (vgg_face | resnet18 | alexnet, the last two from
scratch on the same schedule: our option), init_from, smoke.
"""

import ml_collections

from jaxface import config_lib

ATTRIBUTES = ("gender", "smile")
MODELS = ("vgg_face", "resnet18", "alexnet")
CROP = "decode|detect(detector='mtcnn')|face_crop(margin=0.3, size=224, square=True)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, attribute="gender", model="vgg_face", init_from="")
  if arg.attribute not in ATTRIBUTES:
    raise config_lib.ConfigError(f"config argument attribute={arg.attribute!r}: one of "
                                 f"{list(ATTRIBUTES)}")
  if arg.model not in MODELS:
    raise config_lib.ConfigError(f"config argument model={arg.model!r}: one of {list(MODELS)}")
  c = config_lib.base_config()
  c.name = f"john_csm/celeba/{arg.attribute}/{arg.model}"
  c.data.name, c.data.config, c.data.labels = "celeba", "aligned", (arg.attribute,)
  c.data.train_split, c.data.eval_split, c.data.test_split = "train", "validation", "test"
  c.data.train_pipe = CROP + "|flip_lr"
  c.data.eval_pipe = CROP
  c.model.name = arg.model
  c.model.kwargs = ml_collections.ConfigDict({}, type_safe=False)
  c.model.input_size = (224, 224)
  if arg.model == "vgg_face":
    c.model.kwargs.dropout_rate = 0.5
    c.model.preprocessing = "vggface"
    c.optim.lr_mult = ((r"conv\d_\d/", 0.1),)
  c.init_from = arg.init_from
  c.task.ordinal = ()
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.lr = 0.001
  c.optim.schedule = "step"
  c.optim.boundaries_epochs = (4.0,)
  c.batch_size = 64
  c.train_epochs = 6.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 1.0
  c.best_metric = f"val/{arg.attribute}/accuracy"
  if arg.smoke:
    # The synthetic faces have gender but no smile label, and stored boxes (no detector).
    config_lib.apply_smoke(c, labels=("gender",) if arg.attribute == "gender"
                           else ("expression",))
    side = f"size={c.model.input_size[0]}"
    for key in ("train_pipe", "eval_pipe"):
      c.data[key] = c.data[key].replace("detect(detector='mtcnn')|", "").replace("size=224", side)
    c.best_metric = f"val/{c.data.labels[0]}/accuracy"
  return config_lib.finalize(c)
