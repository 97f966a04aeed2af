# MIL localisation against ground-truth masks (attnmap.evaluate.mil_localisation)
from attnmap.evaluate.mil_localisation import (  # noqa: F401
    attention_localisation,
    patch_labels_from_mask,
    patch_mask_fractions,
    patch_means,
)
