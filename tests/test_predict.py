"""`mnist-cnn-predict`: people's own images through Lightning's predict loop, a CSV and a contact sheet."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, metrics_of, run_cli
from PIL import Image

from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.photo_like import photo_of
from mnist_cnn.predict import predict
from mnist_cnn.preprocess import preprocess
from mnist_cnn.trained import classifier_from_checkpoint


def digit_images(folder: Path) -> Path:
    """Photo-like images of drawn digits (PNG, RGB JPEG, RGBA drawing), plus the bad inputs a folder may hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(5):
        digit = np.zeros((28, 28), dtype=np.uint8)
        digit[6:22, 10 + index : 13 + index] = 255  # a one, a little further right each time
        photo_of(digit, rng).save(folder / f"photo_{index}.png")
    photo_of(digit, rng).convert("RGB").save(folder / "photo.jpg", quality=80)
    drawing = np.zeros((140, 140, 4), dtype=np.uint8)
    drawing[20:120, 60:80, 3] = 255  # black strokes on a transparent canvas
    Image.fromarray(drawing, mode="RGBA").save(folder / "drawing.webp")
    (folder / "truncated.png").write_bytes((folder / "photo_0.png").read_bytes()[:300])
    (folder / "notes.bmp").write_text("not an image")
    Image.new("L", (300, 200), 235).save(folder / "blank_page.tif")
    (folder / "readme.txt").write_text("not an image extension: skipped")
    return folder


def rows_of(run_dir: Path) -> dict[str, dict[str, str]]:
    with (run_dir / "predictions.csv").open() as file:
        return {Path(row["file"]).name: row for row in csv.DictReader(file)}


def run_predict(tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_config("predict", f"paths.output_dir={tmp_path / 'run'}", "trainer.accelerator=cpu", *overrides)
    return predict(cfg)


def test_every_image_gets_a_row_and_bad_ones_an_error_not_a_crash(tiny_run: Path, tmp_path: Path) -> None:
    inputs = digit_images(tmp_path / "images")
    ckpt = metrics_of(tiny_run)["checkpoint"]
    run_predict(tmp_path, f"ckpt_path={ckpt}", f"inputs={inputs}", "batch_size=3")

    rows = rows_of(tmp_path / "run")
    assert list(rows) == sorted(rows)  # file order, batches of 3 in sequence
    assert set(rows) == {f"photo_{i}.png" for i in range(5)} | {
        "photo.jpg",
        "drawing.webp",
        "truncated.png",
        "notes.bmp",
        "blank_page.tif",
    }
    assert rows["truncated.png"]["error"].startswith("unreadable image")
    assert rows["notes.bmp"]["error"] == "not an image file this program can read"
    assert rows["blank_page.tif"]["error"].startswith("no ink found")
    model = classifier_from_checkpoint(ckpt).eval()
    for name in ("photo_0.png", "photo.jpg", "drawing.webp"):
        row = rows[name]
        assert row["error"] == ""
        with Image.open(inputs / name) as image, torch.no_grad():
            expected = model(preprocess(image).unsqueeze(0)).softmax(dim=1)[0]
        assert int(row["prediction"]) == int(expected.argmax())
        assert float(row["confidence"]) == pytest.approx(float(expected.max()), abs=1e-4)
        pairs = [pair.split(":") for pair in row["top3"].split()]
        assert len(pairs) == 3 and int(pairs[0][0]) == int(row["prediction"])
        assert [float(p) for _, p in pairs] == sorted((float(p) for _, p in pairs), reverse=True)
    with Image.open(tmp_path / "run" / "preprocessed.png") as sheet:
        assert sheet.width > 500 and sheet.height > 300


def test_exported_weights_predict_as_their_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    inputs = digit_images(tmp_path / "images")
    from_ckpt = run_predict(tmp_path / "a", f"ckpt_path={metrics_of(tiny_run)['checkpoint']}", f"inputs={inputs}")
    from_pth = run_predict(tmp_path / "b", f"weights_path={tiny_run / 'mnist_classifier.pth'}", f"inputs={inputs}")
    assert [row["top3"] for row in from_ckpt] == [row["top3"] for row in from_pth]


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["inputs=/no/such/folder"], ConfigError, "inputs=/no/such/folder: no such file or folder"),
        (["inputs=EMPTY"], ConfigError, "the folder holds no images"),
        (["inputs=EMPTY/*.png"], ConfigError, "the pattern matches no files"),
        (["inputs=null"], ConfigError, "mnist-cnn-predict needs inputs="),
        (["inputs=2024"], ConfigError, "inputs=2024 was read as a int; quote a path"),
        (["inputs=0"], ConfigError, "inputs=0 was read as a int; quote a path"),
        (["inputs=true"], ConfigError, "inputs=true was read as a bool; quote a path"),
        (["inputs=IMAGES", "shown=-1"], ConfigError, "shown, the rows printed, must be an integer >= 0, got -1"),
        (["inputs=IMAGES", "shown=abc"], ConfigError, "shown, the rows printed, must be an integer >= 0, got 'abc'"),
        (["inputs=IMAGES", "batch_size=0"], ConfigError, "batch_size must be an integer >= 1, got 0"),
        (["inputs=IMAGES", "batch_size=-1"], ConfigError, "batch_size must be an integer >= 1, got -1"),
        (["inputs=[IMAGES,/no/such.png]"], ConfigError, "inputs=/no/such.png: no such file or folder"),
        (
            ["inputs=IMAGES", "ckpt_path=null"],
            ConfigError,
            "needs one model: ckpt_path=<.ckpt>, weights_path=<.pth> or",
        ),
        (["inputs=IMAGES", "weights_path=x.pth"], ConfigError, "needs one model"),
        (["inputs=IMAGES", "ckpt_path=/no/such.ckpt"], CheckpointError, "checkpoint /no/such.ckpt does not exist"),
        (["inputs=IMAGES", "ckpt_path=null", "weights_path=/no/such.pth"], CheckpointError, "do not exist"),
    ],
)
def test_bad_inputs_are_one_clear_error(tiny_run: Path, tmp_path: Path, overrides, error, message) -> None:
    (tmp_path / "empty").mkdir()
    images = digit_images(tmp_path / "images")
    ckpt = metrics_of(tiny_run)["checkpoint"]
    resolved = [o.replace("EMPTY", str(tmp_path / "empty")).replace("IMAGES", str(images)) for o in overrides]
    with pytest.raises(error, match=message.replace("*", r"\*").replace("(", r"\(")):
        run_predict(tmp_path, f"ckpt_path={ckpt}", *resolved)
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_a_list_of_inputs_predicts_each_file_once_in_order(tiny_run: Path, tmp_path: Path) -> None:
    images = digit_images(tmp_path / "images")
    ckpt = metrics_of(tiny_run)["checkpoint"]
    inputs = f"inputs=[{images / 'photo.jpg'},{images}/photo_*.png,{images / 'photo_0.png'}]"
    rows = run_predict(tmp_path, f"ckpt_path={ckpt}", inputs)
    assert [Path(row["file"]).name for row in rows] == ["photo.jpg"] + [f"photo_{index}.png" for index in range(5)]
    respelled = f"inputs=[{images / 'photo.jpg'},{images / '..' / images.name / 'photo.jpg'}]"
    assert len(run_predict(tmp_path, f"ckpt_path={ckpt}", respelled)) == 1  # one file, however it is spelled
    (images / "link.jpg").symlink_to(images / "photo.jpg")  # a second name for it (as a dataset cache makes)
    linked = f"inputs=[{images / 'photo.jpg'},{images / 'link.jpg'}]"
    assert len(run_predict(tmp_path, f"ckpt_path={ckpt}", linked)) == 2


def test_awkward_file_names_and_oversized_images_get_their_rows(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    digit_images(images)
    latin1 = os.fsdecode(b"caf\xe9.png")  # a name that is not UTF-8, as an old camera or archive writes it
    (images / "photo_1.png").rename(images / latin1)
    (images / "photo_2.png").rename(images / "a$_$.png")  # a pair of `$` would be TeX in a matplotlib title
    Image.new("L", (2000, 1500), 255).save(images / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # Pillow refuses over twice this: a decompression bomb
    ckpt = metrics_of(tiny_run)["checkpoint"]
    run_predict(tmp_path, f"ckpt_path={ckpt}", f"inputs={images}")

    rows = rows_of(tmp_path / "run")
    assert rows["caf\\xe9.png"]["prediction"] != "" and rows["a$_$.png"]["prediction"] != ""
    assert rows["huge.png"]["error"].startswith("image too large: Image size (3000000 pixels) exceeds limit")
    assert rows["photo_0.png"]["prediction"] != ""  # the others predicted as ever
    assert (tmp_path / "run" / "preprocessed.png").is_file() and "caf\\xe9.png" in capsys.readouterr().out


@pytest.mark.slow
def test_the_command_line_predicts_a_folder(tiny_run: Path, tmp_path: Path) -> None:
    inputs = digit_images(tmp_path / "images")
    ckpt = metrics_of(tiny_run)["checkpoint"]
    result = run_cli("predict", f"ckpt_path={ckpt}", f"inputs={inputs}", "trainer.accelerator=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "predictions").glob("*/*")
    assert "10 images, 3 with errors" in result.stdout
    assert "photo_0.png" in result.stdout and (run_dir / "preprocessed.png").is_file()
    assert len(rows_of(run_dir)) == 10

    missing = run_cli("predict", f"ckpt_path={ckpt}", "inputs=nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1] == (
        "error: inputs=nowhere: no such file or folder"
    )
