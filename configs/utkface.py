"""Abdolrashidi et al.: multi-task age-bucket and gender networks on UTKFace, and their ensemble.

Paper: A. Abdolrashidi, M. Minaei, E. Azimi, S. Minaee, "Age and Gender Prediction From Face Images
Using Attentional Convolutional Network", arXiv:2010.03791, 2020. Table I: reported (age-bucket
accuracy / gender accuracy / AABD) Attention CNN 0.742 / 0.552 / 0.33; ResNet 0.900 / 0.965 / 0.14;
ensemble 0.913 / 0.965 / 0.11.

Settings (paper sections III-V): UTKFace aligned and cropped 200 x 200 chips, age in 10-year
buckets; a shared trunk with a gender head and an age head, the predicted gender probabilities
concatenated to the age head's features (``gender_age`` head); Residual Attention Network with three
attention modules (Attention-56) or ResNet-18/50; 100 epochs, batch 16, Adam lr 0.005. The ensemble
is the mean of the two models' probabilities (``jaxface.evaluate --ensemble``). Data: the paper used
9,780 images (4,372 male / 5,408 female, most under 2 years old), which is UTKFace's ``crop_part1``
release of the aligned chips, so ``subset=crop_part1`` (builder config ``utkface/crop_part1``; 9,778
usable: two malformed names are skipped and named in the build summary) is the default;
``subset=aligned`` trains on the whole aligned set (``UTKFace/``, 23,708 chips) instead.
AMBIGUOUS: no split is published; the builder makes a seeded 80/10/10 split. The paper does not
say how its networks were initialised; the default trains from scratch. Option: ``init_from`` a
torchvision ResNet-18/50 converted with
``python -m jaxface.convert torchvision resnet50-0676ba61.pth /tmp/resnet50.npz``: every array under ``backbone/`` (BatchNorm statistics included) carries over
(the default ``init_from_expect=("backbone",)``), the ``gender_age`` head is new and the file's
``fc`` unused. Attention-56 has no importer: it starts from scratch or from another run's workdir.

Commands:
  python -m data_pipelines.build utkface --config crop_part1 --manual_dir ~/data/utkface/crop_part1
  python -m jaxface.train --config configs/utkface.py:model=ran --workdir /tmp/utk_ran
  python -m jaxface.train --config configs/utkface.py:model=resnet50 --workdir /tmp/utk_resnet
  python -m jaxface.evaluate --ensemble /tmp/utk_ran,/tmp/utk_resnet --out /tmp/utk_ensemble
Arguments: model (ran | resnet18 | resnet50), subset (crop_part1 | aligned), init_from, smoke.
"""

import ml_collections

from jaxface import config_lib

MODELS = {"ran": "attention56", "resnet18": "resnet18", "resnet50": "resnet50"}
SUBSETS = ("crop_part1", "aligned")  # builder configs of utkface: the paper's set first


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, model="resnet50", subset=SUBSETS[0], init_from="")
  if arg.model not in MODELS:
    raise config_lib.ConfigError(f"config argument model={arg.model!r}: one of {sorted(MODELS)}")
  if arg.subset not in SUBSETS:
    raise config_lib.ConfigError(f"config argument subset={arg.subset!r}: one of {list(SUBSETS)}")
  c = config_lib.base_config()
  c.name = f"abdolrashidi/utkface/{arg.model}"
  c.data.name, c.data.config = "utkface", arg.subset
  c.data.labels = ("gender", "age")
  c.data.train_pipe = "decode|flip_lr"
  c.data.eval_pipe = "decode"
  c.model.name = MODELS[arg.model]
  c.model.kwargs = ml_collections.ConfigDict({}, type_safe=False)
  c.model.head = "gender_age"
  c.model.input_size = (200, 200)
  c.model.preprocessing = "imagenet"
  c.init_from = arg.init_from
  c.task.ordinal = ("age",)
  c.optim.name = "adam"
  c.optim.lr = 0.005
  c.batch_size = 16
  c.train_epochs = 100.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 1.0
  c.best_metric = "val/age/accuracy"
  if arg.smoke:
    config_lib.apply_smoke(c, labels=("gender", "age"))
  return config_lib.finalize(c)
