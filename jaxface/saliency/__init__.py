"""ML-Net inference, saliency reweighting, saliency metrics and the saliency cache.

* ``inference``: SPEC 1.6 pre-processing, 1.7 post-processing, model loading, jitted prediction.
* ``online``: the reweighting ``x * ((1 - r) + r * S)`` in jnp, also inside a jitted train step.
* ``metrics``: CC, NSS, AUC-Judd, shuffled AUC, AUC-Borji, KLD, SIM.
* ``precompute``: ``precompute(config, workdir, splits)`` and ``python -m jaxface.saliency precompute``
  (the cache's format, key and reader: ``data_pipelines.saliency_cache``).
"""

from jaxface.saliency.inference import (MLNetWeights, load_mlnet, make_predict_fn,  # noqa: F401
                                        postprocess, predict, preprocess)
from jaxface.saliency.online import reweight, saliency_reweight_step  # noqa: F401
