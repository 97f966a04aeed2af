# MIL localisation against ground-truth masks (attnmap.evaluate.mil_localisation)
from attnmap.evaluate.mil_localisation import (  # noqa: F401
    attention_localisation,
    patch_labels_from_mask,
    patch_mask_fractions,
    patch_means,
)

# Faithfulness of MIL heatmaps without labels (attnmap.evaluate.patch_flipping)
from attnmap.evaluate.patch_flipping import (  # noqa: F401
    FRACTIONS,
    PatchFlippingResult,
    flipping_auc,
    patch_flipping,
)
