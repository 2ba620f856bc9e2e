"""SAF-BAGE's saliency-ratio ablation: Adience gender with r in {0.1, 0.3, 0.5, 0.7, 0.9}.

Paper: A. Gurnani, K. Shah, V. Gajjar, V. Mavani, Y. Khandhediya, "SAF-BAGE: Salient Approach for
Facial Soft-Biometric Classification - Age, Gender, and Facial Expression", WACV 2019,
arXiv:1803.05719. Section 4.3 "Reweighted saliency ratios study" and Fig. 3 (training loss and
validation accuracy per epoch on Adience gender): higher r converges faster but generalises
worse; r = 0.3 is best (91.8 % gender accuracy, Table 3).

Same schedule as configs/adience_gender.py with the reweighting ratio as the argument; the same
``init_from`` (ImageNet AlexNet: conv1-conv5, fc6, fc7 carry over, fc8 is new; a file without
them fails at start).

Commands:
  python -m jaxface.convert torchvision alexnet-owt-7be5be79.pth /tmp/alexnet.npz
  for r in 0.1 0.3 0.5 0.7 0.9; do python -m jaxface.train \
      --config configs/saliency_ratio_ablation.py:r=$r,fold=0,init_from=/tmp/alexnet.npz,mlnet=/tmp/mlnet.npz \
      --workdir /tmp/ratio/r$r; done
Arguments: r (0.3), fold (0), init_from, mlnet, smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, r=0.3, fold=0, init_from="", mlnet="")
  if not any(abs(arg.r - x) < 1e-9 for x in RATIOS):
    raise config_lib.ConfigError(f"config argument r={arg.r}: the ablation uses {RATIOS}")
  c = config_presets.saf_bage_adience("gender", arg.fold, arg.r, arg.init_from, arg.mlnet,
                                      arg.smoke)
  if not arg.smoke:  # the face detected once at build time (data_pipelines.datasets.detect)
    c.data.config += "_mtcnn"
  with c.unlocked():
    c.name = f"saf_bage/ratio_ablation/r{arg.r}/fold{arg.fold}"
  return config_lib.finalize(c)
