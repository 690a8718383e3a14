"""Run under `torchrun --nproc_per_node 2` with an empty HF_HOME: spml.factories.weights.prepare_weights must let
only the main process download (through a fake hub that counts its downloads) and both processes load the same
weights. Arguments: an output folder and the safetensors file the fake hub serves."""

import json
import shutil
import sys
import time
from pathlib import Path

import huggingface_hub
import torch

from spml.config import load_config
from spml.engine.trainer import build_accelerator
from spml.factories import build_classifier
from spml.factories.weights import prepare_weights
from tests.conftest import TINY
from tests.weights_cache import REVISION

out, served = Path(sys.argv[1]), Path(sys.argv[2])
accelerator = build_accelerator()


def fake_hub_download(repo_id, filename, cache_dir=None, revision=None, **kwargs):
    """Writes a line per download, takes a second (so a concurrent download would show), fills the cache layout."""
    with open(out / "downloads.txt", "a") as log:
        log.write(f"process {accelerator.process_index}: {repo_id}/{filename}\n")
    time.sleep(1)
    folder = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (folder / "snapshots" / REVISION).mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    shutil.copy(served, folder / "snapshots" / REVISION / filename)
    return str(folder / "snapshots" / REVISION / filename)


huggingface_hub.hf_hub_download = fake_hub_download
config = prepare_weights(load_config([], [*TINY, "model.backbone=resnet10t", "model.pretrained=imagenet"]), accelerator)
torch.manual_seed(accelerator.process_index)  # a different random init per process: only loaded weights can agree
backbone = build_classifier(config, 3).backbone.model
weights = torch.cat([p.detach().flatten() for p in backbone.parameters()])
(out / f"process{accelerator.process_index}.json").write_text(
    json.dumps(
        {"record": config.model.pretrained_record, "sum": float(weights.double().sum()), "first": weights[:8].tolist()}
    )
)
accelerator.end_training()
