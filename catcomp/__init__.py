"""catcomp: category-routed learned image compression.

    >>> import catcomp
    >>> data = catcomp.compress("photo.jpg", category="flower", level=2.5)
    >>> image = catcomp.decompress(data)
    >>> small = catcomp.compress("photo.jpg", target=catcomp.Target.size("50KB"))
    >>> sharp = catcomp.compress("photo.jpg", level=4, refine=catcomp.Refinement.aiming_at(30, "ssim"))

Every error raised on bad input is a :class:`CatcompError` whose message
names the file and the reason.
"""

from .categories import CATEGORIES
from .codec import compress, decompress, info
from .codec import open_image as open  # noqa: A001 - catcomp.open mirrors PIL.Image.open
from .errors import CatcompError, FormatError, InputImageError, ModelError, ModelMismatchError
from .ratecontrol import Target
from .refine import Refinement
from .transforms import DEFAULT_LAMBDAS

#: The discrete rate levels the models are trained at (the knob is continuous between them).
LEVELS = tuple(float(i) for i in range(len(DEFAULT_LAMBDAS)))

__version__ = "0.1.0"
__all__ = [
    "compress", "decompress", "open", "info", "Target", "Refinement", "LEVELS", "CATEGORIES",
    "CatcompError", "FormatError", "InputImageError", "ModelError", "ModelMismatchError",
]  # fmt: skip
