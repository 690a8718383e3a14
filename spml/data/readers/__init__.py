"""Dataset readers from plain arguments -> LabelTable: read_nih, read_chexpert, read_mimic, read_generic_csv,
read_synthetic, read_vindr, registered in READERS (nih, chexpert, mimic, csv, synthetic, vindr) for
spml.factories.data, which turns data.* into their arguments (a reader is offered the arguments it names: root, labels, views, classes,
official_split, allow_outside_root, ...).

    table = read_nih("/data/nih", views=["PA"])

Readers parse and validate label files only; whether image files exist is checked by
`spml.data.table.check_images` (build_data calls it; tools/mask_labels.py does not, so labels can be
masked without the images). The synthetic reader registers itself from spml/data/synthetic.py.
"""

from spml.registry import Registry

READERS = Registry("dataset reader")

from spml.data.readers import chexpert, csv, mimic, nih, vindr  # noqa: E402,F401  (register on import)
