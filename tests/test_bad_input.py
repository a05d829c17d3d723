"""Each bad input: a one-line error before any training, exit status 2, and no result files."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST, TRAIN_SIZE, VAL_SIZE, run_cli

from mnist_cnn.idx import raw_files

pytestmark = pytest.mark.slow  # the command line, in subprocesses

FIT_STARTED = "trainable parameters: "  # logged just before fit starts
RESULT_FILES = ("checkpoints", "tensorboard", "metrics.json", "mnist_classifier.pth", "test_confusion_matrix.csv")


def assert_refused(cwd: Path, command: str, *overrides: str, message: str) -> None:
    result = run_cli(command, *FAST, *overrides, cwd=cwd)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and FIT_STARTED not in result.stdout + result.stderr
    for run_dir in (cwd / "outputs").glob("*/*"):
        assert not [name for name in RESULT_FILES if (run_dir / name).exists()]
        assert all(FIT_STARTED not in log.read_text() for log in run_dir.glob("*.log"))


# A few through the real command line, for the exit status and the one line; tests/test_training.py checks
# every bad value in-process.
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
        (f"data.val_size={TRAIN_SIZE}", f"data.val_size={TRAIN_SIZE} leaves no training images"),
        (f"data.train_size={TRAIN_SIZE}", f"data.train_size={TRAIN_SIZE} and data.val_size={VAL_SIZE} need"),
        ("data.augmentation.flip_p=2", "augmentation flip_p must be within [0, 1], got 2"),
    ],
)
def test_invalid_values(mnist_root: Path, tmp_path: Path, override: str, message: str) -> None:
    assert_refused(tmp_path, "train", f"paths.data_dir={mnist_root}", override, message=message)


def test_unknown_option_lists_the_valid_ones(mnist_root: Path, tmp_path: Path) -> None:
    result = run_cli("train", f"paths.data_dir={mnist_root}", "optimizer=adamm", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'optimizer/adamm'" in result.stderr
    assert all(name in result.stderr for name in ("adam", "adamw", "sgd"))
    assert "schema" not in result.stderr.split("Config search path")[0]  # schemas are not options
    assert not (tmp_path / "outputs").exists()


def test_missing_data_with_download_off_names_the_files(tmp_path: Path) -> None:
    message = "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    assert_refused(tmp_path, "train", f"paths.data_dir={tmp_path / 'empty'}", message=message)


def test_truncated_idx_file(mnist_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(mnist_root, root)
    images = raw_files(root / "MNIST" / "raw")["train"][0]
    images.write_bytes(images.read_bytes()[:-1])
    assert_refused(
        tmp_path, "train", f"paths.data_dir={root}", message="train-images-idx3-ubyte is truncated or corrupt"
    )


@pytest.mark.parametrize("command", ["train", "eval"])
def test_checkpoint_that_does_not_exist(mnist_root: Path, tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.ckpt"
    overrides = (f"paths.data_dir={mnist_root}", f"ckpt_path={missing}")
    assert_refused(tmp_path, command, *overrides, message=f"checkpoint {missing} does not exist")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_file_that_is_not_a_checkpoint(mnist_root: Path, tmp_path: Path, command: str) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    overrides = (f"paths.data_dir={mnist_root}", f"ckpt_path={bogus}")
    assert_refused(tmp_path, command, *overrides, message="is not a readable PyTorch checkpoint")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_checkpoint_of_another_model(mnist_root: Path, tmp_path: Path, command: str) -> None:
    other = tmp_path / "other.ckpt"
    net = {"_target_": "mnist_cnn.cnn.ConvolutionalMNISTClassifier"}
    weights = {"net.layers.0.weight": torch.zeros(2, 1, 3, 3), "net.head.weight": torch.zeros(10, 5)}
    torch.save({"state_dict": weights, "hyper_parameters": {"net": net, "optimizer": {"lr": 1e-3}}}, other)
    overrides = (f"paths.data_dir={mnist_root}", f"ckpt_path={other}")
    assert_refused(tmp_path, command, *overrides, message="does not fit the configured model (missing: ")


def test_state_dict_alone_is_not_a_training_checkpoint(mnist_root: Path, tmp_path: Path) -> None:
    weights_only = tmp_path / "weights.pth"
    torch.save({"layers.0.weight": torch.zeros(4, 1, 3, 3)}, weights_only)
    overrides = (f"paths.data_dir={mnist_root}", f"ckpt_path={weights_only}")
    assert_refused(tmp_path, "eval", *overrides, message="is not a checkpoint of mnist-cnn's MNISTClassifier")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.limit_test_batches=0", "trainer.limit_test_batches=0 tests nothing"),
        (
            "export_onnx=true export_path=EXPORT/model.onnx",
            "is where the weights (a .pth) go; the .onnx is written beside it",
        ),
        ("export_path=EXPORT", "is a folder: give the file the weights go to"),
    ],
    ids=["tests-nothing", "weights-named-onnx", "weights-a-folder"],
)
def test_eval_that_would_test_nothing_or_overwrite_its_weights(
    mnist_root: Path, tmp_path: Path, override: str, message: str
) -> None:
    checkpoint = tmp_path / "source.ckpt"
    (tmp_path / "export").mkdir()
    torch.save({"state_dict": {}, "hyper_parameters": {"net": {}}}, checkpoint)  # refused before it is read
    overrides = (
        f"paths.data_dir={mnist_root}",
        f"ckpt_path={checkpoint}",
        *override.replace("EXPORT", str(tmp_path / "export")).split(),
    )
    assert_refused(tmp_path, "eval", *overrides, message=message)
    assert list((tmp_path / "export").iterdir()) == []


def test_eval_without_a_checkpoint(mnist_root: Path, tmp_path: Path) -> None:
    assert_refused(tmp_path, "eval", f"paths.data_dir={mnist_root}", message="mnist-cnn-eval needs ckpt_path=")
