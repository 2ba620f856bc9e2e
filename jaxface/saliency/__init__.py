"""ML-Net inference, saliency reweighting, saliency metrics and the saliency cache.

* ``inference``: the pre- and post-processing of ML-Net's reference code (Cornia et al., ICPR 2016,
  the authors' Keras release), model loading, jitted prediction.
* ``online``: the reweighting ``x * ((1 - r) + r * S)`` in jnp, also inside a jitted train step.
* ``metrics``: CC, NSS, AUC-Judd, shuffled AUC, AUC-Borji, KLD, SIM.
* ``precompute``: ``precompute(config, workdir, splits)`` and ``python -m jaxface.saliency precompute``
  (the cache's format, key and reader: ``data_pipelines.saliency_cache``).

Import the submodule you need (``from jaxface.saliency import inference``): the package itself
imports nothing, so the map metrics a training step uses do not load ML-Net.
"""
