"""Every option of every config group composes, and instantiates the class it names."""

import logging
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import mnist_cnn.runner
from mnist_cnn.augment import RandomFlipRotate
from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.runner import CONFIG_DIR, build_trainer, to_dict
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule
from mnist_cnn.train import build_module, warn_of_skipped_work

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths", "hydra", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def compose_train(tmp_path: Path, *overrides: str, config: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config, overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_the_required_options_exist() -> None:
    assert {"adam", "sgd", "adamw"} <= set(options("optimizer"))
    assert {"default", "cpu", "gpu"} <= set(options("trainer"))
    assert {"tensorboard", "csv"} <= set(options("logger"))
    assert "none" in options("scheduler") and len(options("scheduler")) >= 2
    assert "chapter" in options("experiment")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(tmp_path: Path, group: str, option: str) -> None:
    cfg = compose_train(tmp_path, f"{group}={option}")
    assert cfg.data.batch_size > 0 and cfg.trainer.max_epochs >= 0


def test_default_config_is_the_chapters_setup_on_the_fast_data_path(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, MNISTTensorDataModule)
    assert (datamodule.hparams.batch_size, datamodule.hparams.val_size, datamodule.hparams.download) == (64, 5000, True)
    assert isinstance(datamodule.augmentation, RandomFlipRotate)
    assert (datamodule.augmentation.flip_p, datamodule.augmentation.degrees) == (0.5, 10)
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.trainer.max_epochs) == ("torch.optim.Adam", 1e-3, 5)
    assert (cfg.optimizer.betas if "betas" in cfg.optimizer else (0.9, 0.999)) == (0.9, 0.999)
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("auto", "auto")


def test_classic_data_path_is_the_chapters_pil_pipeline(tmp_path: Path) -> None:
    datamodule = instantiate(compose_train(tmp_path, "data=mnist_pil").data)
    assert isinstance(datamodule, MNISTDataModule) and datamodule.hparams.batch_size == 64
    assert [type(t).__name__ for t in datamodule.train_transform().transforms] == [
        "RandomHorizontalFlip",
        "RandomRotation",
        "ToTensor",
        "Normalize",
    ]
    assert [type(t).__name__ for t in datamodule.eval_transform().transforms] == ["ToTensor", "Normalize"]


@pytest.mark.parametrize("option", options("model"))
def test_model_options_instantiate_a_network(tmp_path: Path, option: str) -> None:
    net = instantiate(compose_train(tmp_path, f"model={option}").model)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizer_options_instantiate_with_parameters(tmp_path: Path, option: str) -> None:
    cfg = compose_train(tmp_path, f"optimizer={option}")
    optimizer = instantiate(cfg.optimizer, params=torch.nn.Linear(2, 2).parameters())
    assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.defaults["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("option", options("scheduler"))
def test_scheduler_options_instantiate_or_are_empty(tmp_path: Path, option: str) -> None:
    cfg = compose_train(tmp_path, f"scheduler={option}")
    if option == "none":
        assert not cfg.scheduler
        return
    module = MNISTClassifier(net=to_dict(cfg.model), optimizer=to_dict(cfg.optimizer), scheduler=to_dict(cfg.scheduler))
    scheduler = module.configure_optimizers()["lr_scheduler"]  # as the module builds it (one-cycle needs that)
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.LRScheduler)
    assert scheduler["interval"] == ("step" if option == "onecycle" else "epoch")


@pytest.mark.parametrize(
    ("trainer", "callbacks", "logger"),
    [("default", "default", "tensorboard"), ("cpu", "none", "csv"), ("gpu", "default", "tensorboard")],
)
def test_trainer_callbacks_and_loggers_instantiate(tmp_path: Path, trainer: str, callbacks: str, logger: str) -> None:
    overrides = [f"trainer={trainer}", f"callbacks={callbacks}", f"logger={logger}"]
    cfg = compose_train(tmp_path, *overrides)
    if trainer == "gpu" and not torch.cuda.is_available():  # Lightning refuses to build it without a GPU
        assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("gpu", 1)
        return
    built = build_trainer(cfg)
    assert isinstance(built, L.Trainer) and built.max_epochs == 5
    assert [type(lg).__name__ for lg in built.loggers] == [
        {"tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}[logger]
    ]
    names = {type(cb).__name__ for cb in built.callbacks}
    if callbacks == "default":
        assert {"ModelCheckpoint", "LearningRateMonitor", "ModelSummary", "StepLossProgressBar"} <= names


def test_without_a_logger_the_lr_monitor_is_left_out_and_training_runs(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "~logger", "trainer=cpu", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0")
    built = build_trainer(cfg)
    assert built.loggers == []
    assert not [cb for cb in built.callbacks if type(cb).__name__ == "LearningRateMonitor"]
    assert "ModelCheckpoint" in {type(cb).__name__ for cb in built.callbacks}
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    batches = torch.utils.data.DataLoader(list(zip(images, labels, strict=True)), batch_size=4)
    module = MNISTClassifier(net=to_dict(cfg.model), optimizer=to_dict(cfg.optimizer))
    built.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    assert built.global_step == 2


def test_removing_the_scheduler_group_means_no_scheduler(tmp_path: Path) -> None:
    module = build_module(compose_train(tmp_path, "~scheduler"))
    assert module.hparams.scheduler is None and set(module.configure_optimizers()) == {"optimizer"}


@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        (["trainer.max_epochs=0"], "trainer.max_epochs=0: nothing is trained"),
        (["robustness=true", "test=false"], "robustness=true measures the test set, which test=false skips"),
        (["robustness=true"], None),
    ],
)
def test_settings_that_skip_work_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, overrides: list[str], warning: str | None
) -> None:
    with caplog.at_level(logging.WARNING, logger="mnist_cnn.train"):
        warn_of_skipped_work(compose_train(tmp_path, *overrides))
    messages = [record.getMessage() for record in caplog.records]
    assert (len(messages) == 1 and warning in messages[0]) if warning else messages == []


@pytest.mark.parametrize(("flags", "warned"), [(["avx2"], True), (["avx2", "avx512_bf16"], False)])
def test_bf16_on_a_cpu_without_its_instructions_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flags: list[str], warned: bool
) -> None:
    monkeypatch.setattr(mnist_cnn.runner, "machine", lambda: {"simd_flags": flags, "isa_limits": {}})
    with caplog.at_level(logging.WARNING, logger="mnist_cnn.runner"):
        build_trainer(compose_train(tmp_path, "trainer=cpu", "trainer.precision=bf16-mixed", "callbacks=none"))
        build_trainer(compose_train(tmp_path, "trainer=cpu", "callbacks=none"))  # 32-true: never a warning
    warnings = [record.getMessage() for record in caplog.records if "emulated" in record.getMessage()]
    assert len(warnings) == warned and all(message.startswith("trainer.precision=bf16-mixed") for message in warnings)


def test_hydra_run_and_sweep_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # reading hydra.run.dir claims the folder
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    run_dir = cfg.hydra.run.dir
    assert re.fullmatch(r"outputs/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", run_dir) and (tmp_path / run_dir).is_dir()
    assert cfg.hydra.run.dir == run_dir and len(list(tmp_path.glob("outputs/*/*"))) == 1  # one folder, kept
    assert re.fullmatch(r"outputs/multirun/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", cfg.hydra.sweep.dir)
    assert cfg.hydra.job.chdir is False


def test_chapter_experiment_trains_on_everything_and_augments_the_test_set(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=chapter")
    assert (cfg.data.val_size, cfg.data.augment_eval) == (0, True)
    assert cfg.callbacks.model_checkpoint.monitor is None
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (1e-3, 64, 5)


def test_eval_config_composes_and_needs_only_a_checkpoint(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "ckpt_path=some.ckpt", config="eval")
    assert cfg.ckpt_path == "some.ckpt" and "model" not in cfg and "optimizer" not in cfg


def test_tuned_experiment_keeps_the_chapters_network_and_epochs(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=tuned")
    default = compose_train(tmp_path)
    assert cfg.model == default.model and cfg.trainer.max_epochs == 5 and cfg.data.val_size == 5000
    assert cfg.data.augmentation.flip_p == 0 and cfg.data.augmentation.degrees == 10
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.scheduler._target_.endswith("OneCycleLR")
    assert cfg.scheduler.max_lr == cfg.optimizer.lr  # the one-cycle peak is the searched lr
    module_lr = instantiate(cfg.optimizer, params=[torch.zeros(1, requires_grad=True)]).param_groups[0]["lr"]
    assert module_lr == pytest.approx(0.0124, rel=0.01)
