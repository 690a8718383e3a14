"""The Trainer is a loop plus callbacks: hook order, the progress it tells the objective, stop requests,
early stopping (with the best checkpoint and resumable state), all on a Trainer handed fakes."""

import json

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from spml.data.loader import EpochSampler
from spml.engine import checkpoint as ckpt
from spml.engine.callbacks import Callback, Checkpoint, EarlyStopping, Validation
from spml.engine.optim import build_scheduler
from spml.engine.trainer import Trainer

STEPS = 3  # batches per epoch


class FakeObjective(nn.Module):
    """A one-weight objective that records the progress the trainer tells it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.told: list[tuple[int, int]] = []
        self.updates = 0

    def set_progress(self, step: int, steps_per_epoch: int) -> None:
        self.told.append((step, steps_per_epoch))

    def after_optimizer_step(self) -> None:
        self.updates += 1

    def forward(self, batch: dict) -> dict:
        loss = (self.weight * batch["x"]).pow(2).mean()
        return {"loss": loss, "logits": batch["x"][:, None], "components": {"square": loss.detach()}}


class Recorder(Callback):
    def __init__(self, stop_at_step: int = 0):
        self.events: list = []
        self.stop_at_step = stop_at_step

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer):
        self.events.append(("epoch_start", trainer.progress.epoch))

    def on_step_end(self, trainer, batch, out):
        self.events.append(("step", trainer.progress.global_step))
        if trainer.progress.global_step == self.stop_at_step:
            trainer.request_stop("a test asked")

    def on_optimizer_step(self, trainer):
        self.events.append("update")

    def on_epoch_end(self, trainer, completed):
        self.events.append(("epoch_end", trainer.progress.epoch, completed))

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


class ScriptedValidation(Validation):
    """Validation whose metric values follow a script instead of scoring a model."""

    def __init__(self, values: list[float]):
        super().__init__(model=None, loader=None, classes=[])
        self.values = iter(values)

    def evaluate(self, trainer):
        value = next(self.values)
        return {"val/mAP": value, "val/mean_auroc": value}


def fake_trainer(callbacks, epochs: int = 2, max_steps: int = 0) -> Trainer:
    data = [{"x": torch.tensor(float(i)), "index": torch.tensor(i), "image": torch.zeros(1, 1, 1)} for i in range(7)]
    loader = DataLoader(data, batch_size=2, sampler=EpochSampler(len(data), 0), drop_last=True)
    accelerator = Accelerator(cpu=True)
    objective = FakeObjective()
    objective, optimizer, loader = accelerator.prepare(
        objective, torch.optim.SGD(objective.parameters(), lr=0.01), loader
    )
    scheduler = build_scheduler(optimizer, "cosine", epochs, len(loader), lr=0.01)
    return Trainer(
        objective, optimizer, scheduler, loader, accelerator, epochs=epochs, max_steps=max_steps, callbacks=callbacks
    )


def test_hooks_run_in_order_and_the_trainer_tells_the_progress():
    recorder = Recorder()
    trainer = fake_trainer([recorder], epochs=2)
    assert trainer.steps_per_epoch == STEPS
    trainer.fit()
    epoch = lambda e: [
        ("epoch_start", e),
        *[x for s in range(1, STEPS + 1) for x in ("update", ("step", e * STEPS + s))],
        ("epoch_end", e + 1, True),
    ]
    assert recorder.events == ["fit_start", *epoch(0), *epoch(1), "fit_end"]
    assert trainer.model.told == [(step, STEPS) for step in range(1, 2 * STEPS + 1)]
    assert trainer.model.updates == trainer.progress.updates == 2 * STEPS


@pytest.mark.parametrize("how", ["request", "max_steps"])
def test_a_stop_is_honoured_after_the_current_batch_and_the_end_hooks_still_run(how):
    recorder = Recorder(stop_at_step=4 if how == "request" else 0)
    trainer = fake_trainer([recorder], epochs=3, max_steps=4 if how == "max_steps" else 0)
    trainer.fit()
    assert trainer.progress.global_step == 4 and trainer.progress.epoch == 1 and trainer.stop_reason
    assert recorder.events[-2:] == [("epoch_end", 1, False), "fit_end"]


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path):
    validation = ScriptedValidation([0.5, 0.6, 0.6, 0.55, 0.7])
    stopping = EarlyStopping(validation, patience=2)
    trainer = fake_trainer([validation, stopping, Checkpoint(tmp_path, validation=validation)], epochs=6)
    trainer.fit()
    assert (
        trainer.progress.epoch == 4
        and "early stopping: val/mAP not better than 0.6000 (epoch 2)" in trainer.stop_reason
    )
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 2 * STEPS  # best: the epoch-2 weights
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 4 * STEPS
    state, _ = ckpt.load_state(ckpt.read_pointer(tmp_path))
    assert state["callbacks"] == {
        "ScriptedValidation": {"best_value": 0.6, "best_epoch": 2},
        "EarlyStopping": {"waited": 2},
    }
    resumed = ScriptedValidation([])
    again = fake_trainer([resumed, EarlyStopping(resumed, patience=2)], epochs=6)
    again.resume(tmp_path)
    assert (resumed.best_value, resumed.best_epoch, again.callbacks[1].waited) == (0.6, 2, 2)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(validation, patience=0)


def test_callbacks_need_distinct_state_keys():
    with pytest.raises(ValueError, match="distinct state keys"):
        fake_trainer([Recorder(), Recorder()])
