"""jaxface: facial soft-biometrics (age, gender, expression) and explanations in JAX."""


def __getattr__(name):
  # Lazy: ``import jaxface`` stays cheap (no JAX import) for the command-line entry points.
  if name == "analyze":
    from jaxface.predict import analyze  # pylint: disable=g-import-not-at-top
    return analyze
  if name in ("load", "Trained"):
    from jaxface import trained  # pylint: disable=g-import-not-at-top
    return getattr(trained, name)
  raise AttributeError(f"module 'jaxface' has no attribute {name!r}")
