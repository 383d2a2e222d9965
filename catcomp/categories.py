"""The one registry of category names, their models and rate defaults.

Every other module asks this one which categories exist and where a
category's model lives, so a name is spelled in exactly one place.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

from .errors import CatcompError

#: Categories the router can choose, in class-index order. ``other`` is the
#: fall-back for low-confidence images and is served by the general model.
CATEGORIES = ("airplane", "automobile", "flower", "anime", "astronomy", "other")

#: The category whose model every other category falls back to.
GENERAL = "general"



def models_dir() -> Path:
    """Where models live: ``$CATCOMP_MODELS``, else the checkout's ``models/``
    (source or editable install), else ``<prefix>/share/catcomp/models``
    (where ``pip install .`` puts the shipped models)."""
    if "CATCOMP_MODELS" in os.environ:
        return Path(os.environ["CATCOMP_MODELS"])
    checkout = Path(__file__).resolve().parent.parent / "models"
    installed = [Path(p) / "share" / "catcomp" / "models" for p in (sys.prefix, site.USER_BASE or "")]
    return next((d for d in [checkout, *installed] if d.is_dir()), installed[0])


def check_category(category: str | None) -> str | None:
    """Return ``category`` if it is known (``None`` passes), else raise."""
    if category is None or category in CATEGORIES:
        return category
    raise CatcompError(f"unknown category {category!r}: choose one of {', '.join(CATEGORIES)}")


def model_name(category: str) -> str:
    """The model directory that serves ``category``.

    A category uses its own model when one is installed, otherwise the
    general model; ``other`` always uses the general model.
    """
    check_category(category)
    if category != "other" and (models_dir() / category / "card.json").is_file():
        return category
    return GENERAL
