"""Zhang et al.'s GNet: VGG-Face fine-tuned from general to specific for gender (FotW).

Paper: K. Zhang, L. Tan, Z. Li, Y. Qiao, "Gender and Smile Classification using Deep Convolutional
Neural Networks", CVPR Workshops (ChaLearn LAP) 2016, doi:10.1109/CVPRW.2016.97. Table 2
(general-to-specific ablation) and Table 3 (crop schemes), both on FotW validation: reported 91.66 %
gender accuracy on FotW with crop scheme 3 and all steps (84.04 % without steps 1-3).

Steps (paper sections 3.1, 3.4), each a run whose ``init_from`` is the previous step's workdir:
  step 1 = VGG-Face identification weights (imported: ``python -m jaxface.convert``);
  ``:step=2`` CelebA, all 40 attributes, multi-label sigmoid loss, base lr 0.001;
  ``:step=3`` CelebA, the single attribute Male, base lr 0.01;
  ``:step=4`` FotW gender, base lr 0.01.
SGD momentum 0.9, weight decay 5e-4, polynomial decay, lr multipliers 0.1 on all conv layers, 0.5
on fc7, 1 on the last layer (fc6: 1, AMBIGUOUS), batch 120, 110K iterations per step. Crop scheme 3
(whole face without the neck, not aligned) via MTCNN boxes and landmarks (``task_crop(3)``).
CelebA aligned images have no stored box; the ``detect`` op runs MTCNN.

What ``init_from`` carries over (jaxface/init_from.py maps a head model's ``backbone/X`` to a
plain model's ``X`` and back; a run that loads less than stated fails at start, naming the arrays):
  step 2 <- the VGG-Face .npz: conv1_1 .. conv5_3, fc6, fc7 (30 arrays) into ``backbone/``; the
    40-attribute head is new and the file's fc8 (2622 identities) unused (expectation
    ``init_from_expect=("backbone",)``, the default);
  step 3 <- step 2's workdir: the same 30 arrays, at the top level again; fc8 (2 classes) is new,
    step 2's head unused (the default);
  step 4 <- step 3's workdir: all 32 arrays, fc8 included (same 2 classes in the same order):
    ``init_from_expect=("all",)``.

Commands (CelebA in ~/data/celeba as distributed, FotW in ~/data/fotw as fotw_schema.json says):
  python -m data_pipelines.build celeba --config aligned --manual_dir ~/data/celeba
  python -m data_pipelines.build fotw --config default --detect mtcnn --manual_dir ~/data/fotw
  python -m jaxface.convert keras_vggface vgg_face_weights.h5 /tmp/vggface.npz
  python -m jaxface.train --config configs/zhang_gnet.py:step=2,init_from=/tmp/vggface.npz --workdir /tmp/gnet2
  python -m jaxface.train --config configs/zhang_gnet.py:step=3,init_from=/tmp/gnet2 --workdir /tmp/gnet3
  python -m jaxface.train --config configs/zhang_gnet.py:step=4,init_from=/tmp/gnet3 --workdir /tmp/gnet4
  python -m jaxface.evaluate --workdir /tmp/gnet4
Arguments: step (2 | 3 | 4), crop (3), init_from, smoke.
"""

import ml_collections

from jaxface import config_lib
from jaxface import config_presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, step=4, crop=3, init_from="")
  c = config_presets.zhang_general_to_specific("gender", arg.step, arg.crop, arg.init_from,
                                               arg.smoke)
  if arg.step == 4 and not arg.smoke:  # FotW's box with MTCNN landmarks found at build time
    c.data.config += "_mtcnn"
  return config_lib.finalize(c)
