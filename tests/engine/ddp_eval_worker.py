"""Run under `torchrun --nproc_per_node 2`: evaluation must see every validation sample exactly once."""

import json
import sys

import numpy as np
import torch

from spml.config import load_config
from spml.data.loader import make_eval_loader
from spml.engine.trainer import build_accelerator
from spml.evaluation.scoring import predict_split
from spml.factories import build_classifier
from spml.factories.artifact import model_spec
from spml.factories.data import build_data
from spml.models.artifact import inference_model
from tests.conftest import TINY

out_path = sys.argv[1]
accelerator = build_accelerator()
config = load_config([], [*TINY, "data.eval_batch_size=7", f"train.out={out_path}.run"], mode="spml")
bundle = build_data(config)
torch.manual_seed(0)
model = inference_model(build_classifier(config, len(bundle.classes)), model_spec(config, bundle.classes))
loader = accelerator.prepare(make_eval_loader(bundle.val, config.data.eval_batch_size, config.data.num_workers))
predictions = predict_split(model.to(accelerator.device), loader, accelerator)
if accelerator.is_main_process:
    json.dump(
        {
            "index": predictions["index"].tolist(),
            "size": len(bundle.val),
            "probs": np.round(predictions["probs"].astype(float), 6).tolist(),
            "processes": accelerator.num_processes,
        },
        open(out_path, "w"),
    )
accelerator.end_training()
