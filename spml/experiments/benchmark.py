"""Images/s and peak memory of the real training code paths, with the ratios that hold on any machine
(tools/benchmark.py parses its flags into BenchmarkSettings and calls run_benchmark, then markdown).

    python tools/benchmark.py [--backbone resnet10t] [--size 128] [--batch 32] [--workers 2] [--bf16]
                              [--channels-last] [--compile] [--steps 8] [--sections loader,augment,step,eval,growth]
                              [--json bench.json] [key=value ...]

Sections (each builds what training builds, from a Config via spml.config.load_config):
  loader   DataLoader (make_train_loader) over a CSV dataset of PNG files, of JPEG files, and of the uint8
           cache built from them (spml.data.cache.build_cache); files are written to a temporary folder
  augment  the weak and strong (+RED) pipelines (spml.factories.build_weak/build_strong) on the device; RED
           alone, kornia vs spml
  step     Trainer.train_step fed by the Trainer's own (accelerate) loader over the cache: supervised, MPC and
           MPC with each component switched off, timed in turns (one step each per round, median step), so
           load from other processes hits all alike; then supervised and MPC alone for the data wait share
           (time blocked on the loader / (wait + step)) with the configured workers
  eval     spml.evaluation.scoring.predict_split over the validation loader (the model validation scores)
  growth   MPC step time for batch x size grids (synthetic set in memory) and the batch transformer's share
Extra key=value arguments override the config (e.g. augment.elastic.kernel_size=31). Prints Markdown tables;
--json writes every number. Peak memory is torch.cuda.max_memory_allocated on a GPU and the process's peak
resident set (cumulative over the run) on the CPU.
"""

from __future__ import annotations

import gc
import logging
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from spml.augment.elastic import RandomElasticTransform
from spml.config import Config, load_config
from spml.data.cache import build_cache
from spml.data.loader import EpochSampler, make_train_loader
from spml.data.synthetic import CLASSES, Phantoms
from spml.engine.callbacks import Validation
from spml.engine.trainer import Trainer
from spml.evaluation.scoring import predict_split
from spml.factories import build_strong, build_trainer, build_weak
from spml.factories.data import build_data

SECTIONS = ("loader", "augment", "step", "eval", "growth")
UNIQUE_IMAGES = 64  # distinct phantoms written; further files are byte copies (decoding costs the same)
MPC_VARIANTS = {  # name -> overrides of the MPC step variants
    "mpc": [],
    "mpc -IPC": ["spml.mpc.ipc_weight=0"],
    "mpc -FPC": ["spml.mpc.fpc_weight=0"],
    "mpc -BTC": ["spml.mpc.btc_weight=0"],
    "mpc base only": ["spml.mpc.ipc_weight=0", "spml.mpc.fpc_weight=0", "spml.mpc.btc_weight=0"],
}


@dataclass(frozen=True)
class BenchmarkSettings:
    """What tools/benchmark.py measures (its flags; see the module docstring).

    Attributes:
        backbone: model.backbone.
        size: data.size.
        batch: data.batch_size per process.
        workers: data.num_workers.
        bf16: train.precision=bf16.
        channels_last: model.channels_last.
        compile: model.compile.
        steps: timed training steps per variant.
        warmup: untimed steps first.
        iters: timed batches per augmentation pipeline.
        images: files written for the loader and step sections.
        source_size: side of the written PNG/JPEG files.
        sections: the sections to run (SECTIONS; an unknown one is a ValueError).
        growth_batches: batches of the cost-growth grid.
        growth_sizes: image sizes of the cost-growth grid.
        growth_steps: timed steps per growth cell.
        bt_batch: batch of the batch-transformer share check.
        overrides: config overrides, e.g. augment.elastic.kernel_size=31.
    """

    backbone: str = "resnet10t"  # model.backbone
    size: int = 128  # data.size
    batch: int = 32  # data.batch_size per process
    workers: int = 2  # data.num_workers
    bf16: bool = False  # train.precision=bf16
    channels_last: bool = False
    compile: bool = False
    steps: int = 8  # timed training steps per variant
    warmup: int = 2  # untimed steps first
    iters: int = 5  # timed batches per augmentation pipeline
    images: int = 512  # files written for the loader and step sections
    source_size: int = 1024  # side of the written PNG/JPEG files
    sections: tuple[str, ...] = SECTIONS
    growth_batches: tuple[int, ...] = (16, 32, 64)
    growth_sizes: tuple[int, ...] = (64, 128, 256)
    growth_steps: int = 2  # timed steps per growth cell
    bt_batch: int = 256  # batch of the batch-transformer share check
    overrides: tuple[str, ...] = ()  # config overrides, e.g. augment.elastic.kernel_size=31

    def __post_init__(self):
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")


# ------------------------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only; nothing on the CPU).

    Args:
        device: the device.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_memory(device: torch.device, into: dict):
    """Adds peak_mib to `into`: CUDA peak allocated during the block, or the process's peak RSS so far on the CPU.

    Args:
        device: the device measured.
        into: the dict that receives peak_mib.

    Yields:
        None: the measured block.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        into["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def images_per_second(run: Callable[[], None], batch: int, iters: int, device: torch.device) -> dict:
    """Run once to warm up, then `iters` times, timed.

    Args:
        run: one batch's work.
        batch: images per run.
        iters: timed runs.
        device: the device (synchronised around the timing).

    Returns:
        {images_per_s, ms (per run), peak_mib}.
    """
    result: dict = {}
    run()
    synchronize(device)
    with peak_memory(device, result):
        start = time.perf_counter()
        for _ in range(iters):
            run()
        synchronize(device)
        seconds = time.perf_counter() - start
    return {"images_per_s": iters * batch / seconds, "ms": 1000 * seconds / iters, **result}


def endless_batches(trainer: Trainer) -> Iterator[dict]:
    """The trainer's prepared train loader epoch after epoch, as Trainer.fit walks it.

    Args:
        trainer: the Trainer.

    Yields:
        The loader's batches, without end.
    """
    epoch = 0
    while True:
        trainer.train_loader.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


class StepTimer:
    """Trainer.train_step on the trainer's own loader, one step at a time (see round_robin).

    Args:
        trainer: the Trainer (its objective is put in train mode).
        warmup: untimed steps run first.
    """

    def __init__(self, trainer: Trainer, warmup: int):
        self.trainer, self.device = trainer, trainer.accelerator.device
        self.batches = endless_batches(trainer)
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.images, self.peak_mib = 0, 0.0
        trainer.objective.train()
        for _ in range(warmup):
            self.trainer.train_step(next(self.batches))
        synchronize(self.device)

    def step(self) -> None:
        record: dict = {}
        with peak_memory(self.device, record):
            start = time.perf_counter()
            batch = next(self.batches)
            ready = time.perf_counter()
            self.trainer.train_step(batch)
            synchronize(self.device)  # the benchmark's own sync: times the step, not its launch
        self.waits.append(ready - start)
        self.steps.append(time.perf_counter() - ready)
        self.images += batch["image"].shape[0]
        self.peak_mib = max(self.peak_mib, record["peak_mib"])

    def result(self) -> dict:
        """Median step (robust to other processes on a shared machine); sums give images/s and data wait."""
        self.trainer.check_finite()
        wait, work = sum(self.waits), sum(self.steps)
        return {
            "step_ms": 1000 * float(np.median(self.steps)),
            "step_images_per_s": self.images / work,
            "images_per_s": self.images / (wait + work),
            "wait_fraction": wait / (wait + work),
            "peak_mib": self.peak_mib,
        }

    def close(self) -> None:
        self.batches.close()
        self.trainer.logger.close()


def round_robin(configs: dict[str, Config], steps: int, warmup: int) -> dict[str, dict]:
    """Time several trainers in turns (one step each per round).

    So load from other processes on the machine hits every variant alike and their ratios stay meaningful.

    Args:
        configs: {name: config} of the variants.
        steps: timed steps per variant.
        warmup: untimed steps per variant.

    Returns:
        {name: StepTimer.result()}: step_ms, step_images_per_s, images_per_s, wait_fraction, peak_mib.
    """
    timers: dict[str, StepTimer] = {}
    try:
        for name, config in configs.items():
            timers[name] = StepTimer(build_trainer(config), warmup)
        for _ in range(steps):
            for timer in timers.values():
                timer.step()
        return {name: timer.result() for name, timer in timers.items()}
    finally:
        for timer in timers.values():
            timer.close()
        timers.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def consecutive(config: Config, steps: int, warmup: int) -> dict:
    """`steps` steps in a row, as training runs them: the data wait share with the configured workers.

    Args:
        config: the run's config.
        steps: timed steps.
        warmup: untimed steps.

    Returns:
        StepTimer.result() of the run.
    """
    return round_robin({"run": config}, steps, warmup)["run"]


# ------------------------------------------------------------------------------------------------ data
def write_dataset(folder: Path, count: int, source_size: int) -> dict[str, Path]:
    """PNG and JPEG files (source_size px) of synthetic phantoms + one label CSV per format.

    Args:
        folder: where to write.
        count: images per format.
        source_size: the files' side in pixels.

    Returns:
        {"png": label CSV, "jpg": label CSV}.
    """
    phantoms = Phantoms(count, seed=0)
    rendered = Phantoms(min(count, UNIQUE_IMAGES), seed=0).render(min(source_size, 512))
    labels = pd.DataFrame(phantoms.labels.astype(int), columns=list(CLASSES))
    labels.insert(0, "patient_id", [f"P{p:05d}" for p in phantoms.patient])
    csvs = {}
    for suffix, options in (("png", {}), ("jpg", {"quality": 90})):
        (folder / suffix).mkdir(parents=True, exist_ok=True)
        paths = [f"{suffix}/{i:05d}.{suffix}" for i in range(count)]
        for i, path in enumerate(paths):
            if i < len(rendered):
                image = Image.fromarray(rendered[i])
                if image.size[0] != source_size:
                    image = image.resize((source_size, source_size), Image.Resampling.BICUBIC)
                image.save(folder / path, **options)
            else:
                shutil.copyfile(folder / paths[i % len(rendered)], folder / path)
        csvs[suffix] = folder / f"labels_{suffix}.csv"
        labels.assign(path=paths).to_csv(csvs[suffix], index=False)
    return csvs


def dataset_config_file(folder: Path, labels: Path, cache: str = "") -> Path:
    """A data-section YAML for the generic CSV reader over the written files.

    Args:
        folder: where to write it.
        labels: the label CSV (write_dataset).
        cache: a uint8 cache folder ("": decode the files).

    Returns:
        The YAML file's path.
    """
    file = folder / f"data_{labels.stem}{'_cache' if cache else ''}.yaml"
    data = {
        "dataset": "csv",
        "labels": str(labels),
        "cache": cache,
        "csv": {"patient_column": "patient_id", "label_columns": list(CLASSES)},
    }
    file.write_text(yaml.safe_dump({"data": data}))
    return file


# ------------------------------------------------------------------------------------------------ sections
class Benchmark:
    """The benchmark's sections on files written to `folder`; their numbers collect in `results`.

    Args:
        args: the settings.
        folder: a scratch folder for the files, the cache and the run.
    """

    def __init__(self, args: BenchmarkSettings, folder: Path):
        self.args, self.folder = args, folder
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.results: dict = {"setup": setup_record(args, self.device)}
        self.csvs: dict[str, Path] = {}
        self.cache = ""

    def overrides(self, size: int | None = None, batch: int | None = None) -> list[str]:
        """The config overrides every measured run shares (the settings' size, batch, backbone, precision, ...).

        Args:
            size: data.size (None: the settings').
            batch: data.batch_size (None: the settings').

        Returns:
            The `key=value` overrides, the settings' own last.
        """
        a = self.args
        size, batch = size or a.size, batch or a.batch
        precision = "bf16" if a.bf16 else "'no'"  # quoted: YAML reads a bare no as false
        return [
            f"data.size={size}",
            f"data.batch_size={batch}",
            f"data.eval_batch_size={2 * batch}",
            f"data.num_workers={a.workers}",
            f"model.backbone={a.backbone}",
            f"model.channels_last={a.channels_last}",
            f"model.compile={a.compile}",
            f"train.precision={precision}",
            f"train.out={self.folder / 'run'}",
            "data.val_fraction=0.2",
            "data.test_fraction=0.05",
            "data.mask_no_positive=keep",
            "eval.bootstrap=0",
            "optim.warmup_epochs=0",
            "train.log_every=1000000",
            "spml.mpc.warmup_epochs=0",
            "spml.mpc.rampup_epochs=0",
            *a.overrides,
        ]

    def config(
        self,
        files: list[Path],
        mode: str = "supervised",
        extra: tuple[str, ...] = (),
        size: int | None = None,
        batch: int | None = None,
    ) -> Config:
        """A config of `mode` from `files` with the shared overrides and `extra`.

        Args:
            files: data-section YAML files.
            mode: "supervised" | "spml".
            extra: more overrides.
            size: data.size (None: the settings').
            batch: data.batch_size (None: the settings').

        Returns:
            The Config.
        """
        return load_config([str(f) for f in files], [*self.overrides(size, batch), *extra], mode=mode)

    def prepare(self) -> None:
        start = time.perf_counter()
        self.csvs = write_dataset(self.folder, self.args.images, self.args.source_size)
        table = pd.read_csv(self.csvs["png"])
        paths = [str(self.folder / p) for p in table["path"]]
        cache_start = time.perf_counter()
        build_cache(paths, self.args.size, str(self.folder / "cache"), workers=self.args.workers, progress=False)
        self.cache = str(self.folder / "cache")
        self.results["data"] = {
            "images": self.args.images,
            "source_size": self.args.source_size,
            "write_s": cache_start - start,
            "cache_build_images_per_s": len(paths) / (time.perf_counter() - cache_start),
        }

    def cache_files(self) -> list[Path]:
        return [dataset_config_file(self.folder, self.csvs["png"], self.cache)]

    def loader(self) -> None:
        out = {}
        sources = {
            "PNG decode": [dataset_config_file(self.folder, self.csvs["png"])],
            "JPEG decode": [dataset_config_file(self.folder, self.csvs["jpg"])],
            "uint8 cache": self.cache_files(),
        }
        for name, files in sources.items():
            config = self.config(files)
            train = build_data(config).train
            loader = make_train_loader(
                train, EpochSampler(len(train), 0), config.data.batch_size, config.data.num_workers
            )
            record: dict = {}
            with peak_memory(torch.device("cpu"), record):
                batches = iter(loader)
                first = next(batches)  # worker start-up is not throughput
                start, images = time.perf_counter(), 0
                for batch in batches:
                    images += batch["image"].shape[0]
                seconds = time.perf_counter() - start
            out[name] = {"images_per_s": images / seconds, "images": images + first["image"].shape[0], **record}
            del batches, loader
        out["cache / PNG"] = out["uint8 cache"]["images_per_s"] / out["PNG decode"]["images_per_s"]
        out["cache / JPEG"] = out["uint8 cache"]["images_per_s"] / out["JPEG decode"]["images_per_s"]
        self.results["loader"] = out

    def augment(self) -> None:
        a, config = self.args, self.config(self.cache_files()).augment
        torch.manual_seed(0)
        images = torch.rand(a.batch, 1, a.size, a.size, device=self.device)
        elastic = config.elastic
        red = {
            "kernel_size": (elastic.kernel_size,) * 2,
            "sigma": (elastic.sigma,) * 2,
            "alpha": (elastic.alpha,) * 2,
            "p": 1.0,
        }
        pipelines = {
            "weak": build_weak(config),
            "strong (no RED)": build_strong(config, red=False),
            "strong + RED": build_strong(config, red=True),
            "RED alone p=1, kornia": K.RandomElasticTransform(**red),
            "RED alone p=1, spml": RandomElasticTransform(**red),
        }
        out = {}
        for name, pipeline in pipelines.items():
            pipeline = pipeline.to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=a.bf16):
                out[name] = images_per_second(lambda pipeline=pipeline: pipeline(images), a.batch, a.iters, self.device)
        self.results["augment"] = out

    def steps(self) -> None:
        """Step times of every variant in turns; then supervised and MPC alone for their data wait."""
        a, files = self.args, self.cache_files()
        configs = {"supervised": self.config(files, "supervised")}
        configs.update({name: self.config(files, "spml", tuple(extra)) for name, extra in MPC_VARIANTS.items()})
        if "eval" in a.sections:
            self.results["eval"] = with_trainer(configs["supervised"], self.evaluate)
        if "step" not in a.sections:
            return
        out = round_robin(configs, a.steps, a.warmup)
        for name in MPC_VARIANTS:
            out[name]["vs supervised"] = out[name]["step_ms"] / out["supervised"]["step_ms"]
        for name in ("supervised", "mpc"):
            alone = consecutive(configs[name], a.steps, a.warmup)
            out[name].update({"images_per_s": alone["images_per_s"], "wait_fraction": alone["wait_fraction"]})
        self.results["step"] = out

    def evaluate(self, trainer: Trainer) -> dict:
        """Evaluation throughput: predict_split over the validation loader, after one untimed pass.

        Args:
            trainer: the Trainer (its Validation callback's model and loader).

        Returns:
            {images_per_s, images, peak_mib}.
        """
        validation = trainer.callback(Validation)
        images = len(validation.loader.dataset)
        predict_split(validation.model, validation.loader, trainer.accelerator)  # warm-up (workers, compile)
        record: dict = {}
        with peak_memory(self.device, record):
            start = time.perf_counter()
            predict_split(validation.model, validation.loader, trainer.accelerator)
            seconds = time.perf_counter() - start
        return {"images_per_s": images / seconds, "images": images, **record}

    def growth(self) -> None:
        """MPC step time (synthetic set in memory, no loader) over batch x size; BT share at a large batch."""
        a, grid = self.args, []
        synthetic = (
            "data.dataset=synthetic",
            "data.num_workers=0",
            "data.synthetic.num_images=" + str(max(*a.growth_batches, a.bt_batch) * 2 + 64),
        )
        cells = {
            (batch, size): self.config([], "spml", synthetic, size=size, batch=batch)
            for size in a.growth_sizes
            for batch in a.growth_batches
        }
        timings = round_robin(cells, a.growth_steps, 1)
        for (batch, size), timing in timings.items():
            grid.append(
                {
                    "batch": batch,
                    "size": size,
                    "step_ms": timing["step_ms"],
                    "ns_per_image_pixel": 1e6 * timing["step_ms"] / (batch * size * size),
                }
            )
        frame = pd.DataFrame(grid)
        design = np.column_stack([np.ones(len(frame)), np.log(frame["batch"]), np.log(frame["size"] ** 2)])
        exponents = np.linalg.lstsq(design, np.log(frame["step_ms"]), rcond=None)[0]
        size = min(a.growth_sizes)
        config = self.config([], "spml", synthetic, size=size, batch=a.bt_batch)
        self.results["growth"] = {
            "grid": grid,
            "batch_exponent": exponents[1],
            "pixel_exponent": exponents[2],
            "bt": with_trainer(config, lambda trainer: self.bt_share(trainer)),
        }

    def bt_share(self, trainer: Trainer) -> dict:
        """Forward + backward of the MPC objective's batch transformer alone on (B, D) embeddings.

        For B up to --bt-batch, against the whole MPC step at --bt-batch (the smallest growth size: its largest share).

        Args:
            trainer: an MPC Trainer at batch --bt-batch.

        Returns:
            {batch, size, step_ms, bt_ms ({B: ms}), btc_share}.
        """
        timer = StepTimer(trainer, 1)
        for _ in range(self.args.growth_steps):
            timer.step()
        step_ms = timer.result()["step_ms"]
        timer.close()
        transformer = trainer.model.batch_transformer
        width = trainer.model.classifier.head.embed_dim
        rows = {}
        for batch in sorted({16, 64, self.args.bt_batch}):
            embedding = torch.randn(batch, width, device=self.device, requires_grad=True)
            rows[batch] = images_per_second(
                lambda embedding=embedding: transformer(embedding).sum().backward(), 1, 5, self.device
            )["ms"]
        return {
            "batch": self.args.bt_batch,
            "size": min(self.args.growth_sizes),
            "step_ms": step_ms,
            "bt_ms": rows,
            "btc_share": rows[self.args.bt_batch] / step_ms,
        }


def with_trainer(config: Config, measure: Callable[[Trainer], dict]) -> dict:
    """measure(build_trainer(config)); the trainer and its loader workers are gone before the next measurement.

    Args:
        config: the run's config.
        measure: the measurement.

    Returns:
        What `measure` returns.
    """
    trainer = build_trainer(config)
    try:
        return measure(trainer)
    finally:
        trainer.logger.close()
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def setup_record(args: BenchmarkSettings, device: torch.device) -> dict:
    """What was measured where: the device, torch's version, the load average, the command and the settings.

    Args:
        args: the settings.
        device: the device.

    Returns:
        The record.
    """
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "load_average": " ".join(load),
        "command": " ".join(sys.argv),
        **asdict(args),
    }


# ------------------------------------------------------------------------------------------------ report
def markdown(results: dict) -> str:
    """The results as Markdown tables, one per section that ran.

    Args:
        results: run_benchmark's results.

    Returns:
        The text.
    """
    s = results["setup"]
    lines = [
        f"device: {s['device']}; torch {s['torch']}; load average {s['load_average']}",
        f"backbone {s['backbone']}, {s['size']} px, batch {s['batch']}, workers {s['workers']}, "
        f"bf16 {s['bf16']}, channels_last {s['channels_last']}, compile {s['compile']}, "
        f"overrides {' '.join(s['overrides']) or '-'}",
        f"command: {s['command']}",
        "",
    ]

    def table(title: str, header: list[str], rows: list[list]) -> None:
        lines.extend([f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        lines.extend("| " + " | ".join(fmt(v) for v in row) + " |" for row in rows)
        lines.append("")

    if "loader" in results:
        r = results["loader"]
        table(
            "loader (make_train_loader)",
            ["source", "images/s", "peak RSS MiB"],
            [[k, v["images_per_s"], v["peak_mib"]] for k, v in r.items() if isinstance(v, dict)],
        )
        lines.append(f"cache / PNG decode = {r['cache / PNG']:.1f}x, cache / JPEG decode = {r['cache / JPEG']:.1f}x\n")
    if "augment" in results:
        table(
            "augmentation on the device",
            ["pipeline", "images/s", "ms/batch", "peak MiB"],
            [[k, v["images_per_s"], v["ms"], v["peak_mib"]] for k, v in results["augment"].items()],
        )
    if "step" in results:
        r = results["step"]
        table(
            "training step (Trainer.train_step, loader over the uint8 cache)",
            ["objective", "images/s", "step ms", "x supervised", "data wait", "peak MiB"],
            [
                [
                    k,
                    v["images_per_s"],
                    v["step_ms"],
                    v.get("vs supervised", 1.0),
                    f"{100 * v['wait_fraction']:.1f}%",
                    v["peak_mib"],
                ]
                for k, v in r.items()
            ],
        )
        if "loader" in results:
            cache = results["loader"]["uint8 cache"]["images_per_s"]
            supervised, mpc = (cache / r[name]["step_images_per_s"] for name in ("supervised", "mpc"))
            lines.append(f"cache loader / supervised step consumption = {supervised:.1f}x, / MPC = {mpc:.1f}x\n")
    if "eval" in results:
        e = results["eval"]
        lines.append(
            f"evaluation (predict_split, {e['images']} images): {e['images_per_s']:.1f} images/s, "
            f"peak {e['peak_mib']:.0f} MiB\n"
        )
    if "growth" in results:
        g = results["growth"]
        table(
            "cost growth (MPC step, synthetic set in memory)",
            ["batch", "size", "step ms", "ns / (image x pixel)"],
            [[r["batch"], r["size"], r["step_ms"], r["ns_per_image_pixel"]] for r in g["grid"]],
        )
        bt = g["bt"]
        alone = ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in bt["bt_ms"].items())
        lines.append(
            f"fit: step time ~ batch^{g['batch_exponent']:.2f} x pixels^{g['pixel_exponent']:.2f}\n\n"
            f"batch transformer forward+backward alone: {alone}; share of the MPC step at batch "
            f"{bt['batch']}, {bt['size']} px ({bt['step_ms']:.0f} ms): {100 * bt['btc_share']:.2f}%\n"
        )
    return "\n".join(lines)


def fmt(value) -> str:
    """A table cell: floats with 2 decimals below 10, none above; anything else as str().

    Args:
        value: the value.

    Returns:
        The text.
    """
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def run_benchmark(settings: BenchmarkSettings) -> dict:
    """Every section of `settings.sections` on files written to a temporary folder.

    Args:
        settings: what to measure.

    Returns:
        The results ({"setup", "data", "loader", "augment", "step", "eval", "growth"}: the numbers `markdown`
        prints).
    """
    logging.getLogger("spml.data.build").setLevel(logging.ERROR)  # per-trainer data notes, not results
    with tempfile.TemporaryDirectory(prefix="spml-bench-") as folder:
        bench = Benchmark(settings, Path(folder))
        if {"loader", "step", "eval"} & set(settings.sections):
            bench.prepare()
        for section in ("loader", "augment", "growth"):
            if section in settings.sections:
                getattr(bench, section)()
        if "step" in settings.sections or "eval" in settings.sections:
            bench.steps()
    return bench.results
