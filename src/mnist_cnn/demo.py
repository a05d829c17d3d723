"""`mnist-cnn-demo ckpt_path=...`: a local page where a person draws or uploads a digit and sees the model's reading.

The page is gradio (the optional `demo` extra); what it shows comes from `DigitReader`, which needs no web
server: the shared preprocessing (`mnist_cnn.preprocess`), the model, and the 28x28 image the model saw.
"""

import socket
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.errors import ConfigError, exit_on_user_error
from mnist_cnn.preprocess import NoDigitError, normalise, to_mnist
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.trained import load_classifier

SHOWN_SCALE = 8  # the 28x28 image is shown 224 px wide, each pixel a visible square
ASK = "Draw a digit, or upload a photo of one."
# gradio's sketchpad opens with no tool picked; a first stroke should draw, so the page picks the brush itself.
PICK_BRUSH = """() => {
    const pick = () => {
        const brush = document.querySelector("#sketch button[aria-label=Brush]");
        if (brush) { brush.click(); } else { setTimeout(pick, 100); }
    };
    pick();
}"""


class DigitReader:
    """The prediction behind the page: one image in, the digit probabilities and the image the model saw out."""

    def __init__(self, module: MNISTClassifier) -> None:
        self.module = module.eval()

    def read(
        self, image: Image.Image | dict[str, Any] | None
    ) -> tuple[dict[str, float] | None, np.ndarray | None, str]:
        """`(probability of each digit, the model's input enlarged, a status line)`; no digit gives `None`s and why.

        `image` is an uploaded picture, or the sketchpad's value (a dict whose `composite` is the drawing).
        """
        if isinstance(image, dict):
            image = image.get("composite")
        if image is None:
            return None, None, ASK
        try:
            digit = to_mnist(image)
        except NoDigitError as error:
            return None, None, str(error)
        with torch.inference_mode():
            probabilities = self.module(normalise(digit).unsqueeze(0)).softmax(dim=1)[0]
        top = int(probabilities.argmax())
        names = self.module.class_names
        status = f"The model reads {names[top]}, with probability {float(probabilities[top]):.1%}."
        return dict(zip(names, probabilities.tolist(), strict=True)), enlarged(digit), status


def enlarged(digit: np.ndarray) -> np.ndarray:
    """The [0, 1] 28x28 image as 8-bit grey, each pixel a `SHOWN_SCALE`-wide square (no smoothing)."""
    pixels = np.round(digit * 255).astype(np.uint8)
    return pixels.repeat(SHOWN_SCALE, axis=0).repeat(SHOWN_SCALE, axis=1)


def build_page(reader: DigitReader) -> Any:
    """The gradio page: a sketchpad and an upload box on the left, the reading on the right."""
    try:
        import gradio as gr  # the optional `demo` extra: the core install does not need a web server
    except ImportError as error:
        raise ConfigError('mnist-cnn-demo needs gradio: pip install -e ".[demo]"') from error

    with gr.Blocks(title="mnist-cnn: draw a digit", analytics_enabled=False) as page:
        gr.Markdown("# Draw a digit\nThe model reads it as MNIST's images were made: see *what the model saw*.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Draw"):
                    sketch = gr.Sketchpad(
                        type="pil",
                        canvas_size=(400, 400),
                        fixed_canvas=True,
                        brush=gr.Brush(default_size=24, colors=["#000000"], color_mode="fixed"),
                        layers=False,
                        label="Draw with the mouse or a finger",
                        elem_id="sketch",
                    )
                with gr.Tab("Upload"):
                    upload = gr.Image(type="pil", sources=["upload", "clipboard"], label="A photo", elem_id="upload")
            with gr.Column():
                status = gr.Markdown(ASK, elem_id="status")
                probabilities = gr.Label(num_top_classes=3, label="Top 3", elem_id="prediction")
                seen = gr.Image(label="What the model saw (28x28)", interactive=False, elem_id="seen")
        outputs = [probabilities, seen, status]
        sketch.change(reader.read, inputs=sketch, outputs=outputs, show_progress="hidden")
        upload.change(reader.read, inputs=upload, outputs=outputs)
        page.load(None, js=PICK_BRUSH)
    return page


def serve(cfg: DictConfig) -> None:
    """Load the model, then serve the page until interrupted (Ctrl-C)."""
    check_address(cfg.host, cfg.port)
    page = build_page(DigitReader(load_classifier(cfg.ckpt_path, cfg.weights_path)))
    page.launch(server_name=cfg.host, server_port=cfg.port, share=False, show_error=True)


def check_address(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when the page cannot be served at `host:port`."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:  # in use, not this machine's address, or a privileged port
            raise ConfigError(
                f"cannot serve the page at {host}:{port} ({error.strerror}): pick another port="
            ) from None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="demo")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        serve(cfg)


if __name__ == "__main__":
    main()
