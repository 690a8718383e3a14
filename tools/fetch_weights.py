"""Fetch the pretrained weights that configs (or names) need into the libraries' own caches, for offline nodes.

Run it on a machine with internet (a cluster's login node) with the HF_HOME / TORCH_HOME the compute nodes will
use; it prints the environment to set there (HF_HUB_OFFLINE=1 and the cache folders). Training then finds the
files offline; a missing one stops it before any data is read, naming this command.

Examples:
  python tools/fetch_weights.py configs/papers/*.yaml
  python tools/fetch_weights.py densenet121.tv_in1k xrv:densenet121-res224-all hf-hub:timm/resnet50.a1_in1k
  python tools/fetch_weights.py convnext_tiny                 # a bare timm architecture: its default weights
  python tools/fetch_weights.py --encoder dmis-lab/biobert-v1.1   # a text encoder for tools/make_prototypes.py
"""

from __future__ import annotations

import argparse
import sys

from spml.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "items",
        nargs="*",
        help="config YAML files and/or weights names (as model.pretrained "
        "takes them, or a timm architecture for its default weights)",
    )
    parser.add_argument("--encoder", action="append", default=[], help="hub text encoder to fetch (repeatable)")
    parser.add_argument("--override", action="append", default=[], help="dotted override applied to each config")
    args = parser.parse_args(argv)
    if not args.items and not args.encoder:
        parser.error("give config files, weights names or --encoder NAME")

    def fetch() -> int:
        from spml.factories.weights import fetch_all, weights_to_fetch
        from spml.models.text_prototypes import hub_encoder
        from spml.models.weights import offline_environment
        from spml.utils.text import describe_weights as describe

        notes: list[str] = []
        specs = weights_to_fetch(args.items, tuple(args.override), notes)
        for _, record in fetch_all(specs):
            print(describe(record))
        for name in args.encoder:
            print(f"text encoder {name}: {hub_encoder(name)}")
        if not specs and not args.encoder:
            print("nothing to fetch: the configs train from random init (model.pretrained empty)")
        for note in notes:
            print(f"note: {note}")
        print("\nOn the compute nodes (the same paths, or copies of these folders), set:")
        print("\n".join(f"  {line}" for line in offline_environment()))
        return 0

    return run_cli(fetch, parser)


if __name__ == "__main__":
    sys.exit(main())
