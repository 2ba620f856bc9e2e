"""The user-input errors every command answers in one line (``jaxface.cli``).

A leaf module: ``cli`` imports it instead of ``config_lib``, so a library module that the CLI
modules import (``data_pipelines.build`` through ``datasets.sources``) never closes an import cycle
through ``config_lib`` and the modules it validates with (``jaxface.mixture``).
"""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""
