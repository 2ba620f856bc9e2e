"""SAF-BAGE on Adience age: saliency-reweighted AlexNet, 5-fold subject-exclusive protocol.

Paper: A. Gurnani, K. Shah, V. Gajjar, V. Mavani, Y. Khandhediya, "SAF-BAGE: Salient Approach for
Facial Soft-Biometric Classification - Age, Gender, and Facial Expression", WACV 2019,
arXiv:1803.05719. Table 2 (Adience age): reported 62.11 +- 3.2 % exact (52.2 % without saliency,
`:r=0`), "mean accuracy +- standard error" over the five folds (``jaxface.evaluate --folds``
reports it as ``stderr`` beside the sample ``std``).

Settings (jaxface.config_presets.saf_bage_adience, paper section 3): Adience faces/ crops, face
crop with 30 % margin, 224 x 224, ML-Net saliency r = 0.3 (cached), ImageNet AlexNet with fc6-fc8
fine-tuned, flip and +-3 degree rotation, 30 epochs, SGD lr 0.001, dropout 0.4, batch 128.
AMBIGUOUS (see the preset): random flips and angles per pass instead of the paper's fixed 4x
copies (``:copies=4`` trains the paper's number of updates); SGD momentum 0.9 (no optimiser named).
``init_from``: torchvision's ImageNet AlexNet (``vgg16-397923af.pth`` for ``:model=vgg16``)
converted; conv1-conv5, fc6, fc7 carry over (the default ``init_from_expect=("backbone",)``: a
file without them fails at start), fc8 is new.

Commands (fold k = 0..4; then the mean and std over the folds):
  python -m data_pipelines.build adience --config faces_age --detect mtcnn \
      --manual_dir ~/data/adience
  python -m jaxface.convert torchvision alexnet-owt-7be5be79.pth /tmp/alexnet.npz
  for k in 0 1 2 3 4; do python -m jaxface.train \
      --config configs/adience_age.py:fold=$k,init_from=/tmp/alexnet.npz,mlnet=/tmp/mlnet.npz \
      --workdir /tmp/adience_age/fold$k; done
  python -m jaxface.evaluate --folds /tmp/adience_age/fold0,/tmp/adience_age/fold1,\
      /tmp/adience_age/fold2,/tmp/adience_age/fold3,/tmp/adience_age/fold4
Arguments: fold (0), r (0.3), model (alexnet; vgg16 for the section 4.3 ablation, fc8 trained
only), copies (1 | 4), init_from, mlnet, smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, fold=0, r=0.3, model="alexnet", copies=1, init_from="",
                             mlnet="")
  c = config_presets.saf_bage_adience("age", arg.fold, arg.r, arg.init_from, arg.mlnet,
                                      arg.smoke, arg.model, arg.copies)
  if not arg.smoke:  # the face detected once at build time (data_pipelines.datasets.detect)
    c.data.config += "_mtcnn"
  return config_lib.finalize(c)
