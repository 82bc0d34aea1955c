"""The BDD100K detection schema (det_20) with the official COCO ids.

Names from the 2018 release are mapped onto det_20 names; a few categories are
ignore regions: they map onto a det_20 class for evaluation (iscrowd=1) but are
never training targets. The mapping follows the BDD100K toolkit's box config.
"""

from __future__ import annotations

# Official det_20 category ids (1-based, as in the toolkit's COCO conversion).
CATEGORIES: tuple[str, ...] = (
    "pedestrian",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
    "traffic light",
    "traffic sign",
)
NUM_CLASSES = len(CATEGORIES)
NAME_TO_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(CATEGORIES)}
ID_TO_NAME: dict[int, str] = {i: name for name, i in NAME_TO_ID.items()}

# Older names (2018 release, box-tracking) that mean a det_20 class.
NAME_MAPPING: dict[str, str] = {
    "person": "pedestrian",
    "bike": "bicycle",
    "motor": "motorcycle",
    "caravan": "car",
    "van": "car",
}

# Ignore regions: evaluated as iscrowd=1 of the mapped class, never trained on.
IGNORE_MAPPING: dict[str, str] = {
    "other person": "pedestrian",
    "other vehicle": "car",
    "trailer": "truck",
}


def resolve(name: str) -> tuple[int, bool] | None:
    """Map a raw category name to (det_20 id, is_ignore_region); None if unknown."""
    if name in NAME_TO_ID:
        return NAME_TO_ID[name], False
    if name in NAME_MAPPING:
        return NAME_TO_ID[NAME_MAPPING[name]], False
    if name in IGNORE_MAPPING:
        return NAME_TO_ID[IGNORE_MAPPING[name]], True
    return None
