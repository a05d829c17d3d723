"""What each speed option gives on this machine, measured in one process with interleaved repeats.

    python benchmarks/options.py --data-dir ../shared/data
    python benchmarks/options.py --data-dir ../shared/data --parts lightning     # one part only

Parts (`--parts`): the training step (memory layout, Adam implementation, torch.compile with its compile
time, thread count), what Lightning adds per step (automatic and manual optimization, the epoch alone),
batch augmentation (ours against per-image alternatives, our sampling grid and elastic blur against torch's
and torchvision's, and two cheaper-looking ways to sample that were not kept), making the next batch in a
second thread during the step (not kept), the update of an EMA of the weights, evaluation batch size, and
the classic PIL loader's worker count. Each figure is the median of interleaved repeats, because timings on
a shared machine drift; compare rows within one part of
one run, not across runs.
"""

import argparse
import importlib.util
import itertools
import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.transforms import v2

from mnist_cnn.augment import (
    RandomAffine,
    flip_rotate_matrices,
    gaussian_blur_matrix,
    normalize,
    sampling_grid,
    to_unit_float,
)
from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule, TensorMNIST

BATCH = 64
STEPS_PER_EPOCH = 55_000 // BATCH + 1
LIGHTNING_STEPS = 400  # per pass of the Lightning part: enough that a pass takes seconds


def median_ms(candidates: dict[str, Callable[[], None]], calls: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each candidate, run in turns so that drift hits all alike."""
    for run in candidates.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def report(title: str, results: dict[str, float], unit: str, per_epoch: bool = True) -> None:
    print(f"\n### {title}\n\n| option | {unit} |" + (f" s/epoch ({STEPS_PER_EPOCH} steps) |" if per_epoch else ""))
    print("|---|---:|" + ("---:|" if per_epoch else ""))
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |" + (f" {value * STEPS_PER_EPOCH / 1e3:.2f} |" if per_epoch else ""))


def model_step(
    memory_format: torch.memory_format, compile_model: bool = False, **adam
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of a fresh chapter network on the batch it is given."""
    torch.manual_seed(0)
    net = ConvolutionalMNISTClassifier().to(memory_format=memory_format)
    model = torch.compile(net) if compile_model else net
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, **adam)
    criterion = nn.CrossEntropyLoss()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad()
        criterion(model(images.contiguous(memory_format=memory_format)), labels).backward()
        optimizer.step()

    return step


def cycling_step(batches: list, memory_format: torch.memory_format, compile_model: bool = False, **adam) -> Callable:
    """`model_step` over `batches` in turn: one call, one step."""
    step, cycle = model_step(memory_format, compile_model, **adam), itertools.cycle(batches)
    return lambda: step(*next(cycle))


def step_options(batches: list, with_compile: bool, repeats: int) -> None:
    nchw, nhwc = torch.contiguous_format, torch.channels_last
    candidates = {
        "NCHW, Adam for-loop (the chapter)": cycling_step(batches, nchw),
        "channels_last": cycling_step(batches, nhwc),
        "channels_last + fused Adam (our default)": cycling_step(batches, nhwc, fused=True),
    }
    if with_compile:
        start = time.perf_counter()
        compiled = cycling_step(batches, nhwc, compile_model=True, fused=True)
        compiled()
        candidates[f"... + torch.compile (compiling took {time.perf_counter() - start:.0f} s)"] = compiled
    report("Training step, batch 64", median_ms(candidates, calls=40, repeats=repeats), "ms/step")
    threads = torch.get_num_threads()
    by_threads = {}
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        by_threads[f"{count} intra-op thread(s), our default step"] = median_ms(
            {"step": cycling_step(batches, nhwc, fused=True)}, calls=40, repeats=repeats
        )["step"]
    torch.set_num_threads(threads)
    report("Threads", by_threads, "ms/step")


def augmentation_options(images: torch.Tensor, repeats: int) -> None:
    ours = RandomAffine(0.5, 10)
    per_image = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomRotation(10)])
    pil_images = [transforms.functional.to_pil_image(image) for image in images]
    pil = transforms.Compose(
        [transforms.RandomHorizontalFlip(0.5), transforms.RandomRotation(10), transforms.ToTensor()]
    )
    shift_scale = RandomAffine(flip_p=0, degrees=8.5, translate=0.02, scale=0.08, interpolation="bilinear")
    elastic = RandomAffine(0, 1.2, 0.05, 0.005, elastic_alpha=10, elastic_sigma=4, interpolation="bilinear")
    candidates = {
        "ours: one grid_sample, parameters per image": lambda: normalize(ours(to_unit_float(images))),
        "ours: rotation, shift, scale, bilinear (experiment=fast)": lambda: normalize(
            shift_scale(to_unit_float(images))
        ),
        "ours: rotation, shift, scale, elastic, bilinear (experiment=best)": lambda: normalize(
            elastic(to_unit_float(images))
        ),
        "torchvision v2 on each image tensor": lambda: torch.stack([per_image(x) for x in to_unit_float(images)]),
        "PIL per image (the classic path)": lambda: torch.stack([pil(x) for x in pil_images]),
    }
    if importlib.util.find_spec("kornia"):  # optional: pip install kornia to compare
        import kornia.augmentation as K

        flip_rotate = nn.Sequential(K.RandomHorizontalFlip(p=0.5), K.RandomRotation(10.0, resample="nearest", p=1.0))
        candidates["kornia, parameters per image"] = lambda: flip_rotate(to_unit_float(images))
    report("Augmenting one batch of 64", median_ms(candidates, calls=10, repeats=repeats), "ms/batch")


def grid_options(repeats: int) -> None:
    """The two pieces of RandomAffine we wrote ourselves, against the library calls they replace."""
    theta = torch.randn(BATCH, 2, 3, generator=torch.Generator().manual_seed(0))
    field = torch.rand(BATCH, 2, 28, 28, generator=torch.Generator().manual_seed(1))
    blur = gaussian_blur_matrix(28, 4.0, field.device, field.dtype)
    candidates = {
        "sampling grid: torch's F.affine_grid": lambda: F.affine_grid(theta, [BATCH, 1, 28, 28], align_corners=False),
        "sampling grid: ours, one matrix product": lambda: sampling_grid(theta, 28, 28),
        "elastic field blur: torchvision's gaussian_blur (sigma 4)": lambda: v2.functional.gaussian_blur(
            field, [25, 25], [4.0, 4.0]
        ),
        "elastic field blur: ours, two 28x28 matrix products": lambda: blur @ field @ blur.T,
    }
    report(f"Augmentation pieces, batch of {BATCH}", median_ms(candidates, calls=20, repeats=repeats), "ms/batch")


def nearest_by_gather(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`grid_sample(mode="nearest", padding_mode="zeros", align_corners=False)` as index arithmetic and one gather,
    for a grid of the images' own size (tried, not kept)."""
    count, channels, height, width = images.shape
    pixels = grid.add(1).mul_(torch.tensor([width, height], dtype=grid.dtype)).sub_(1).div_(2).round_()
    x, y = pixels.unbind(-1)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    flat = (y * width + x).long().where(inside, torch.full((), height * width, dtype=torch.long))
    padded = F.pad(images.reshape(count, channels, height * width), (0, 1))  # the last pixel is the zero fill
    return padded.gather(2, flat.view(count, 1, -1).expand(-1, channels, -1)).view(images.shape)


def sampling_options(repeats: int) -> None:
    """Two ways to make the default's augmentation cheaper that were measured and not kept."""
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(16 * BATCH, 1, 28, 28, generator=generator)
    angles = torch.rand(BATCH, generator=generator) * 20 - 10
    theta = flip_rotate_matrices(angles, torch.rand(BATCH, generator=generator) < 0.5)
    grid = sampling_grid(theta, 28, 28)
    chapter = RandomAffine(0.5, 10)

    def by_grid_sample() -> torch.Tensor:
        return F.grid_sample(images[:BATCH], grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def by_gather() -> torch.Tensor:
        return nearest_by_gather(images[:BATCH], grid)

    assert torch.equal(by_gather(), by_grid_sample()), "the gather must give grid_sample's pixels"
    many_at_once = f"the same, {len(images):,} images a call, per {BATCH}"
    candidates = {
        "nearest sampling: F.grid_sample (ours)": by_grid_sample,
        "nearest sampling: rounded grid and one gather (same pixels)": by_gather,
        f"the chapter's augmentation, {BATCH} images a call (ours)": lambda: chapter(images[:BATCH]),
        many_at_once: lambda: chapter(images),
    }
    results = median_ms(candidates, calls=20, repeats=repeats)
    results[many_at_once] /= len(images) // BATCH
    report(f"Sampling and batching, batch of {BATCH}", results, "ms/batch")


def overlap_options(dataset: TensorMNIST, repeats: int, steps: int = 150) -> None:
    """Making the next batch in a second thread while the model steps, against one after the other (not kept)."""
    step = model_step(torch.channels_last, fused=True)
    draw = torch.Generator().manual_seed(3)
    order = [torch.randint(len(dataset), (BATCH,), generator=draw).tolist() for _ in range(steps)]
    ready = [dataset.__getitems__(indices) for indices in order]

    def on_ready_batches() -> None:
        for batch in ready:
            step(*batch)

    def one_after_the_other() -> None:
        for indices in order:
            step(*dataset.__getitems__(indices))

    def next_batch_in_a_thread() -> None:
        with ThreadPoolExecutor(max_workers=1) as maker:  # one batch ahead; its errors reach this thread
            upcoming = maker.submit(dataset.__getitems__, order[0])
            for indices in order[1:]:
                batch, upcoming = upcoming.result(), maker.submit(dataset.__getitems__, indices)
                step(*batch)
            step(*upcoming.result())

    candidates = {
        "the step alone, on ready batches (the bare loop)": on_ready_batches,
        "make the batch, then step (ours)": one_after_the_other,
        "make the next batch in a second thread during the step": next_batch_in_a_thread,
    }
    per_pass = median_ms(candidates, calls=1, repeats=repeats)
    report("Data beside the step", {name: ms / steps for name, ms in per_pass.items()}, "ms/step")


def ema_options(repeats: int) -> None:
    """One update of an average of the weights, as `callbacks=[default,ema]` makes after every step."""
    net = ConvolutionalMNISTClassifier()
    averages = {
        "per-tensor avg_fn (Lightning's EMAWeightAveraging)": AveragedModel(net, avg_fn=get_ema_avg_fn(0.99)),
        "one foreach lerp (ours: get_ema_multi_avg_fn)": AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.99)),
    }
    candidates = {name: (lambda average=average: average.update_parameters(net)) for name, average in averages.items()}
    report("Updating an EMA of the weights", median_ms(candidates, calls=50, repeats=repeats), "ms/update")


def eval_options(datamodule: MNISTTensorDataModule, repeats: int) -> None:
    net = ConvolutionalMNISTClassifier().to(memory_format=torch.channels_last).eval()
    test_set = datamodule.test_set
    results = {}
    for batch_size in (64, 1000):

        def evaluate(batch_size: int = batch_size) -> None:
            with torch.inference_mode():
                for images, _ in DataLoader(test_set, batch_size=batch_size, collate_fn=lambda b: b):
                    net(images.contiguous(memory_format=torch.channels_last))

        seconds = median_ms({"eval": evaluate}, calls=1, repeats=repeats)["eval"] / 1e3
        results[f"test set, batch {batch_size}"] = len(test_set) / seconds
    report("Inference", results, "images/s", per_epoch=False)


def worker_options(data_dir: str, batches: int = 100) -> None:
    augment = [transforms.RandomHorizontalFlip(0.5), transforms.RandomRotation(10)]
    results = {}
    for workers in (0, 1, 2):
        datamodule = MNISTDataModule(data_dir, val_size=0, download=False, num_workers=workers, augmentation=augment)
        datamodule.setup("fit")
        start = time.perf_counter()
        for _ in itertools.islice(datamodule.train_dataloader(), batches):
            pass
        results[f"PIL loader, num_workers={workers}"] = (time.perf_counter() - start) / batches * 1e3
    report("Classic loader alone (data only, no model)", results, "ms/batch")


class LoggingEveryStep(MNISTClassifier):
    """Lightning's textbook pattern: `self.log` the loss and the metric object at every step."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, labels = self._step(batch, self.criterion)
        self.train_acc(preds, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        pass


class LossOnly(MNISTClassifier):
    """The plain loop's step inside Lightning's automatic optimization: no metrics, no callbacks of ours."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return self.criterion(self(images), labels)

    def configure_callbacks(self) -> list[L.Callback]:
        return []

    def on_train_epoch_end(self) -> None:
        pass


class ManualLossOnly(LossOnly):
    """The same step under manual optimization: the module calls zero_grad, backward and step itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        optimizer.zero_grad()
        images, labels = batch
        self.criterion(self(images), labels).backward()
        optimizer.step()


class EpochClock(L.Callback):
    """Seconds of the training epoch alone: the fit's start-up and teardown are left out."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.started


def lightning_options(batches: list, repeats: int) -> None:
    """Lightning's cost per step: one pass over the same batches, by a plain loop and by `Trainer.fit`.

    Only the epoch is timed (`EpochClock`), so the fit's start-up, which a short pass would spread over few
    steps, is not counted.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    net = {"_target_": "mnist_cnn.cnn.ConvolutionalMNISTClassifier"}
    adam = {"_target_": "torch.optim.Adam", "lr": 1e-3, "fused": True}

    def fit(module_class: type[MNISTClassifier]) -> Callable[[], float]:
        def one_pass() -> float:
            clock = EpochClock()
            trainer = L.Trainer(
                max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=50, callbacks=[clock],
            )  # fmt: skip
            trainer.fit(module_class(net, adam), train_dataloaders=DataLoader(batches, batch_size=None))
            return clock.seconds

        return one_pass

    def plain_pass() -> float:
        step = model_step(torch.channels_last, fused=True)
        start = time.perf_counter()
        for images, labels in batches:
            step(images, labels)
        return time.perf_counter() - start

    candidates = {
        "plain loop (no Lightning)": plain_pass,
        "Trainer.fit, the plain step (loss only), automatic optimization": fit(LossOnly),
        "Trainer.fit, the plain step (loss only), manual optimization": fit(ManualLossOnly),
        "Trainer.fit, our module (metric updates, its two callbacks)": fit(MNISTClassifier),
        "Trainer.fit, self.log of loss and metric every step": fit(LoggingEveryStep),
    }
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):  # in turns, so that drift hits all alike
        for name, one_pass in candidates.items():
            seconds[name].append(one_pass())
    per_step = {name: statistics.median(values) / len(batches) * 1e3 for name, values in seconds.items()}
    plain = per_step["plain loop (no Lightning)"]
    ratios = {name: ms / plain for name, ms in per_step.items()}
    report(f"Lightning's share ({len(batches)} steps per pass, the epoch alone)", per_step, "ms/step")
    report("... as a ratio to the plain loop", ratios, "x", per_epoch=False)


PARTS = ("step", "lightning", "augmentation", "grid", "sampling", "overlap", "ema", "eval", "workers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per figure")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for ~30 s)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="which parts to run (default: all)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    datamodule = MNISTTensorDataModule(args.data_dir, BATCH, val_size=0, download=False, augmentation=RandomAffine())
    datamodule.setup()
    batches = list(itertools.islice(datamodule.train_dataloader(), LIGHTNING_STEPS))
    parts = {
        "step": lambda: step_options(batches[:100], with_compile=not args.no_compile, repeats=args.repeats),
        "lightning": lambda: lightning_options(batches, args.repeats),
        "augmentation": lambda: augmentation_options(datamodule.train_set.images[:BATCH], args.repeats),
        "grid": lambda: grid_options(args.repeats),
        "sampling": lambda: sampling_options(args.repeats),
        "overlap": lambda: overlap_options(datamodule.train_set, args.repeats),
        "ema": lambda: ema_options(args.repeats),
        "eval": lambda: eval_options(datamodule, args.repeats),
        "workers": lambda: worker_options(args.data_dir),
    }
    for name in PARTS:
        if name in args.parts:
            parts[name]()


if __name__ == "__main__":
    main()
