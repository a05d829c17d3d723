"""ONNX and TorchScript exports give torch's logits (onnxruntime, torch.jit.load), and predict alike."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import compose_config, metrics_of, run_cli
from torchvision.datasets import MNIST
from torchvision.transforms import v2

from mnist_cnn.export import export
from mnist_cnn.exporters import CONTRACT
from mnist_cnn.predict import predict
from mnist_cnn.trained import classifier_from_checkpoint


def normalised_test_split(mnist_root: Path) -> torch.Tensor:
    """The tests' MNIST-format test split, normalised as in training: (N, 1, 28, 28)."""
    test = MNIST(str(mnist_root), train=False, download=False)
    scale = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.5,), (0.5,))])
    return scale(test.data.unsqueeze(1))


def run_export(tmp_path: Path, ckpt: str, *overrides: str) -> dict[str, str]:
    return export(compose_config("export", f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", *overrides))


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return run_export(tmp_path_factory.mktemp("export"), metrics_of(tiny_run)["checkpoint"])


def test_onnx_gives_torch_s_logits_for_any_batch_size(exported, tiny_run: Path, mnist_root: Path) -> None:
    images = normalised_test_split(mnist_root)
    model = classifier_from_checkpoint(metrics_of(tiny_run)["checkpoint"]).eval()
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    for batch in (images[:1], images[:37], images):  # the batch dimension is dynamic
        (logits,) = session.run(None, {"image": batch.numpy()})
        with torch.no_grad():
            expected = model(batch).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
        assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_torchscript_reloads_and_gives_torch_s_logits(exported, tiny_run: Path, mnist_root: Path) -> None:
    images = normalised_test_split(mnist_root)
    model = classifier_from_checkpoint(metrics_of(tiny_run)["checkpoint"]).eval()
    scripted = torch.jit.load(exported["torchscript"])
    with torch.no_grad():
        for batch in (images[:3], images):
            torch.testing.assert_close(scripted(batch), model(batch), rtol=1e-5, atol=1e-6)


def test_the_onnx_file_says_what_input_it_wants(exported) -> None:
    model = onnx.load(exported["onnx"])
    assert model.doc_string == CONTRACT and "(x - 0.5) / 0.5" in CONTRACT
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert props["input_normalisation"].startswith("(x - 0.5) / 0.5") and props["classes"] == "0,1,2,3,4,5,6,7,8,9"
    (image,) = model.graph.input
    dims = [dim.dim_param or dim.dim_value for dim in image.type.tensor_type.shape.dim]
    assert image.name == "image" and dims[1:] == [1, 28, 28] and isinstance(dims[0], str)  # a named, free batch


def test_every_run_writes_its_onnx_model_beside_its_weights(tiny_run: Path) -> None:
    onnx_path = tiny_run / "mnist_classifier.onnx"
    assert metrics_of(tiny_run)["onnx"] == str(onnx_path) and onnx_path.is_file()
    onnx.checker.check_model(str(onnx_path))


def test_predicting_with_onnxruntime_alone_gives_lightning_s_predictions(tiny_run: Path, tmp_path: Path) -> None:
    from test_predict import digit_images

    inputs = digit_images(tmp_path / "images")
    common = [f"inputs={inputs}", "trainer.accelerator=cpu"]
    ckpt = metrics_of(tiny_run)["checkpoint"]
    lightning = predict(compose_config("predict", f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'a'}", *common))
    onnx_path = f"onnx_path={tiny_run / 'mnist_classifier.onnx'}"
    runtime = predict(compose_config("predict", onnx_path, f"paths.output_dir={tmp_path / 'b'}", *common))
    assert [(row["file"], row["prediction"], row["error"]) for row in lightning] == [
        (row["file"], row["prediction"], row["error"]) for row in runtime
    ]
    for ours, theirs in zip(lightning, runtime, strict=True):
        if not ours["error"]:
            assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=1e-4)
    assert (tmp_path / "b" / "predictions.csv").is_file() and (tmp_path / "b" / "preprocessed.png").is_file()


def test_one_format_without_brackets_exports_that_format_alone(tiny_run: Path, tmp_path: Path) -> None:
    written = run_export(tmp_path, metrics_of(tiny_run)["checkpoint"], "formats=torchscript")
    assert list(written) == ["torchscript"] and Path(written["torchscript"]).is_file()
    assert not list(tmp_path.glob("*.onnx"))


def test_an_unknown_format_or_a_bad_onnx_file_is_one_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    from mnist_cnn.errors import CheckpointError, ConfigError

    with pytest.raises(ConfigError, match=r"formats=\['tflite'\]: choose from \['onnx', 'torchscript'\]"):
        run_export(tmp_path, metrics_of(tiny_run)["checkpoint"], "formats=[tflite]")
    with pytest.raises(ConfigError, match=r"formats=\['onnx', 'tflite'\]: choose from"):
        run_export(tmp_path, metrics_of(tiny_run)["checkpoint"], "formats=[onnx,tflite]")
    (tmp_path / "fake.onnx").write_text("not a model")
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "images" / "a.png")
    cfg = compose_config(
        "predict",
        f"onnx_path={tmp_path / 'fake.onnx'}",
        f"inputs={tmp_path / 'images'}",
        f"paths.output_dir={tmp_path}",
    )
    with pytest.raises(CheckpointError, match="is not an ONNX model onnxruntime can load"):
        predict(cfg)
    assert not (tmp_path / "predictions.csv").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    from mnist_cnn.errors import exit_on_user_error

    (tmp_path / "a_file").write_text("a file, not a folder")
    for fmt in ("onnx", "torchscript"):  # torch.jit.save raised a RuntimeError without an errno
        with pytest.raises(SystemExit) as stopped, exit_on_user_error():
            run_export(tmp_path / "a_file" / "sub", metrics_of(tiny_run)["checkpoint"], f"formats=[{fmt}]")
        assert stopped.value.code == 2
        assert capsys.readouterr().err.startswith(f"error: cannot write {tmp_path / 'a_file' / 'sub'}")


@pytest.mark.slow
def test_the_export_command_writes_both_formats(tiny_run: Path, tmp_path: Path) -> None:
    result = run_cli("export", f"ckpt_path={metrics_of(tiny_run)['checkpoint']}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "exports").glob("*/*")
    assert sorted(path.name for path in run_dir.glob("mnist_classifier.*")) == [
        "mnist_classifier.onnx",
        "mnist_classifier.torchscript.pt",
    ]
    assert f"onnx: {run_dir / 'mnist_classifier.onnx'}" in result.stdout
