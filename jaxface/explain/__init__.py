"""Explaining jaxface models: CAMs, occlusion, Canonical Saliency Maps, metrics, sanity checks.

Every explainer works on ``forward(variables, x) -> (logits, aux)`` (see :func:`core.bind`), is
jitted and batched, explains each image's own target and records its settings with the result.
"""
