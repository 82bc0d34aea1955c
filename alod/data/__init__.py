"""BDD100K-format data: category schema, label files, COCO conversion, datasets."""
