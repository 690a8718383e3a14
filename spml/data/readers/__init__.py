"""Dataset readers: `READERS[name](config: DataConfig) -> LabelTable` (nih, chexpert, mimic, csv, synthetic).

Readers parse and validate label files only; whether image files exist is checked by
`spml.data.table.check_images` (build_data calls it; tools/mask_labels.py does not, so labels can be
masked without the images). The synthetic reader registers itself from spml/data/synthetic.py.
"""
from spml.registry import Registry

READERS = Registry("dataset reader")

from spml.data.readers import chexpert, csv, mimic, nih  # noqa: E402,F401  (register on import)
