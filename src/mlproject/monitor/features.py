"""Moved: the per-image summaries live with the images kind
(`mlproject.kinds.images.monitoring`); these names stay importable for the server's prediction
log and older callers until they ask the kind themselves."""

from __future__ import annotations

from ..kinds.images.monitoring import (  # noqa: F401
    BRIGHT,
    BRIGHT_U8,
    DARK,
    DARK_U8,
    FEATURES,
    features_dict,
    image_features,
)
