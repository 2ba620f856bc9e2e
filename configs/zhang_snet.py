"""Zhang et al.'s SNets: VGG-Face fine-tuned from general to specific for smile (FotW); the two
crops' SNets are ensembled.

Paper: K. Zhang, L. Tan, Z. Li, Y. Qiao, "Gender and Smile Classification using Deep Convolutional
Neural Networks", CVPR Workshops (ChaLearn LAP) 2016, doi:10.1109/CVPRW.2016.97. Table 3: reported
89.34 % smile accuracy on FotW validation for the ensemble of crop schemes 1 (aligned whole face)
and 5 (aligned mouth and cheeks).

Steps as in configs/zhang_gnet.py (step 3 uses CelebA's Smiling attribute), with the same arrays
carried over by ``init_from`` at each step: step 2 <- VGG-Face: conv1_1 .. conv5_3, fc6, fc7 into
``backbone/`` (head new); step 3 <- step 2: those 30 arrays (fc8 new); step 4 <- step 3: all 32
(``init_from_expect=("all",)``). A step that loads less fails at start. Train one SNet per crop
scheme and average their probabilities with ``jaxface.evaluate --ensemble``.

Commands (the same builds and VGG-Face conversion as configs/zhang_gnet.py):
  python -m data_pipelines.build celeba --config aligned --manual_dir ~/data/celeba
  python -m data_pipelines.build fotw --config default --detect mtcnn --manual_dir ~/data/fotw
  python -m jaxface.convert keras_vggface vgg_face_weights.h5 /tmp/vggface.npz
  for crop in 1 5; do
    python -m jaxface.train --config configs/zhang_snet.py:crop=$crop,step=2,init_from=/tmp/vggface.npz --workdir /tmp/snet$crop/2
    python -m jaxface.train --config configs/zhang_snet.py:crop=$crop,step=3,init_from=/tmp/snet$crop/2 --workdir /tmp/snet$crop/3
    python -m jaxface.train --config configs/zhang_snet.py:crop=$crop,step=4,init_from=/tmp/snet$crop/3 --workdir /tmp/snet$crop/4
  done
  python -m jaxface.evaluate --ensemble /tmp/snet1/4,/tmp/snet5/4 --out /tmp/snet_ensemble
Arguments: crop (1 | 5), step (2 | 3 | 4), init_from, smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, crop=1, step=4, init_from="")
  if arg.crop not in (1, 5):
    raise config_lib.ConfigError(f"config argument crop={arg.crop}: the SNets use crops 1 and 5")
  c = config_presets.zhang_general_to_specific("smile", arg.step, arg.crop, arg.init_from,
                                               arg.smoke)
  if arg.step == 4 and not arg.smoke:  # FotW's box with MTCNN landmarks found at build time
    c.data.config += "_mtcnn"
  return config_lib.finalize(c)
