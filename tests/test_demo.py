"""`mnist-cnn-demo`: the prediction behind the draw-a-digit page, and the page itself in headless Chromium."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, error_text, metrics_of, start_cli
from PIL import Image

from mnist_cnn.demo import ASK, DigitReader, build_page, enlarged, serve
from mnist_cnn.errors import ConfigError
from mnist_cnn.photo_like import photo_of
from mnist_cnn.preprocess import NO_INK, preprocess, to_mnist
from mnist_cnn.trained import classifier_from_checkpoint

BROWSER_HINT = (
    "the browser test needs Debian's headless Chromium and its driver: apt-get install chromium chromium-driver"
)


def a_photo(seed: int = 0) -> Image.Image:
    """A photo-like image of a drawn one: dark ink on uneven light paper, large and off-centre."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[5:23, 12:16] = 255
    return photo_of(digit, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def reader(tiny_run: Path) -> DigitReader:
    return DigitReader(classifier_from_checkpoint(metrics_of(tiny_run)["checkpoint"]))


def test_reader_gives_the_models_probabilities_and_the_image_it_saw(reader: DigitReader) -> None:
    photo = a_photo()
    probabilities, seen, status = reader.read(photo)

    with torch.no_grad():
        expected = reader.module(preprocess(photo).unsqueeze(0)).softmax(dim=1)[0]
    assert list(probabilities) == [str(d) for d in range(10)]
    assert list(probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-6)
    assert np.array_equal(seen, enlarged(to_mnist(photo)))
    assert status.startswith(f"The model reads {int(expected.argmax())}, with probability")


def test_a_drawing_is_read_from_the_sketchpads_composite(reader: DigitReader) -> None:
    drawing = np.zeros((400, 400, 4), dtype=np.uint8)
    drawing[60:340, 180:215, 3] = 255  # black strokes on the transparent canvas
    composite = Image.fromarray(drawing, mode="RGBA")
    layers_only = Image.new("RGBA", (400, 400))
    sketchpad_value = {"background": layers_only, "layers": [composite], "composite": composite}

    assert reader.read(sketchpad_value)[0] == reader.read(composite)[0]
    assert reader.read(sketchpad_value)[0] is not None


def test_no_digit_is_a_message_not_an_error(reader: DigitReader) -> None:
    assert reader.read(None) == (None, None, ASK)
    assert reader.read({"background": None, "layers": [], "composite": None}) == (None, None, ASK)
    assert reader.read(Image.new("RGBA", (400, 400))) == (None, None, NO_INK)  # an empty sketchpad
    assert reader.read(Image.new("L", (300, 200), 230)) == (None, None, NO_INK)  # a blank page


def test_the_seen_image_shows_each_pixel_as_a_square() -> None:
    digit = np.random.default_rng(0).random((28, 28))
    shown = enlarged(digit)
    assert shown.shape == (224, 224) and shown.dtype == np.uint8
    blocks = shown.reshape(28, 8, 28, 8)
    assert (blocks == np.round(digit * 255).astype(np.uint8)[:, None, :, None]).all()


def test_without_gradio_the_page_says_how_to_install_it(reader: DigitReader, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[demo\]"'):
        build_page(reader)


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        # The checkpoint does not exist: the port is checked first, so the error names the port.
        cfg = compose_config("demo", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"port={port}")
        with pytest.raises(ConfigError, match=rf"cannot serve the page at 127\.0\.0\.1:{port} .*pick another port="):
            serve(cfg)


def test_no_model_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give one of ckpt_path="):
        serve(compose_config("demo", f"port={free_port()}"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mnist-cnn-demo exited with {server.returncode}: {error_text(server)[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the page at {url} did not come up in {timeout:.0f} s: {error_text(server)[-2000:]}")


def headless_chromium():
    """A Selenium driver for Debian's chromium and chromedriver (never one Selenium would download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(BROWSER_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    page = webdriver.Chrome(service=Service(driver), options=options)
    page.implicitly_wait(30)  # the page renders after it loads: finding an element waits for it
    return page


def reading_on(page) -> str:
    """The status line, once the page has read a digit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def new_reading(page) -> str | bool:
        text = page.find_element(By.ID, "status").text
        return text if text.startswith("The model reads") else False

    return WebDriverWait(page, 60).until(new_reading)


def label_on(page) -> str:
    from selenium.webdriver.common.by import By

    return page.find_element(By.CSS_SELECTOR, "#prediction [data-testid=label-output-value]").text


def open_tab(page, url: str, name: str) -> None:
    """A fresh page (nothing read yet) with the tab `name` open."""
    from selenium.webdriver.common.by import By

    page.get(url)
    page.find_element(By.XPATH, f"//button[@role='tab'][normalize-space()='{name}']").click()


@pytest.mark.slow
def test_the_page_reads_an_uploaded_photo_and_a_drawing_in_a_real_browser(
    tiny_run: Path, reader: DigitReader, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    photo = tmp_path / "photo.png"
    a_photo().save(photo)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_cli(f"ckpt_path={metrics_of(tiny_run)['checkpoint']}", f"port={port}", cwd=tmp_path, command="demo")
    page = None
    try:
        wait_for_page(url, server)
        page = headless_chromium()

        # Upload: the page shows what the in-process reader says of the same file.
        open_tab(page, url, "Upload")
        page.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(photo))
        probabilities, _, expected = reader.read(Image.open(photo))
        assert reading_on(page) == expected
        assert label_on(page) == max(probabilities, key=probabilities.get)
        assert page.find_elements(By.CSS_SELECTOR, "#seen img")  # the 28x28 image the model saw
        page.save_screenshot(str(tmp_path / "uploaded.png"))

        # Draw: one stroke with the mouse, straight away (the page picks the brush when it loads).
        open_tab(page, url, "Draw")
        canvas = page.find_elements(By.CSS_SELECTOR, "#sketch canvas")[-1]
        stroke = ActionChains(page).move_to_element_with_offset(canvas, 0, -110).click_and_hold()
        stroke.move_to_element_with_offset(canvas, 5, 0).move_to_element_with_offset(canvas, 10, 110)
        stroke.release().perform()
        drawn = reading_on(page)
        assert drawn.startswith(f"The model reads {label_on(page)}, ")
        assert page.find_elements(By.CSS_SELECTOR, "#seen img")
        page.save_screenshot(str(tmp_path / "drawn.png"))
    finally:
        if page is not None:
            page.quit()
        server.terminate()
        server.wait(timeout=30)

    for name in ("uploaded.png", "drawn.png"):
        with Image.open(tmp_path / name) as screenshot:
            assert screenshot.format == "PNG" and screenshot.width == 1280
