"""``python -m jaxface.convert``: the weight importers' command.

The command is ``jaxface/tools/convert.py``; the importers are ``jaxface/weights/``.
"""

from jaxface.tools import convert

if __name__ == "__main__":
  convert.run()
