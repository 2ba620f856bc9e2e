"""The jaxface model zoo: Flax linen modules returning ``(output, aux)``.

``get(name, **kwargs)`` builds a registered model; ``python -m jaxface.models`` lists them.
"""

# Importing the architecture modules registers their names; this order is the listing order.
# pylint: disable=g-bad-import-order
from jaxface.models import alexnet  # noqa: F401
from jaxface.models import vgg  # noqa: F401
from jaxface.models import resnet  # noqa: F401
from jaxface.models import residual_attention  # noqa: F401
from jaxface.models import gilnet  # noqa: F401
from jaxface.models import mlnet  # noqa: F401
from jaxface.models import mtcnn  # noqa: F401
from jaxface.models import dlib_gender  # noqa: F401
from jaxface.models import dlib_age  # noqa: F401
from jaxface.models import mini_xception  # noqa: F401
from jaxface.models.registry import get, names, register, spec  # noqa: F401
