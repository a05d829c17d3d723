"""A trained classifier outside Python's training code: ONNX (for onnxruntime and other runtimes) and TorchScript.

Both take the model's own input and give its logits, with any batch size:
  input  `image`:  float32 (N, 1, 28, 28), grey digits as MNIST has them (light ink on black, 20-px box,
                   centred by mass: `mnist_cnn.preprocess`), scaled to [0, 1], then (x - 0.5) / 0.5;
  output `logits`: float32 (N, 10), one score per digit 0-9 (softmax gives probabilities).
The ONNX file carries that contract in its doc string and metadata (`input_normalisation`, `classes`).
"""

import logging
import warnings
from pathlib import Path

import onnx
import torch

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.files import atomic_path
from mnist_cnn.images import IMAGE_SIZE, NUM_CLASSES, PIXEL_MEAN, PIXEL_STD

INPUT, OUTPUT = "image", "logits"
CONTRACT = (
    f"Input '{INPUT}': float32 (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) grey digits, light ink on black, pixels scaled "
    f"to [0, 1] then normalised as (x - {PIXEL_MEAN}) / {PIXEL_STD}. Output '{OUTPUT}': float32 (N, {NUM_CLASSES}) "
    "logits for the digits 0-9."
)
FORMATS = {"onnx": "mnist_classifier.onnx", "torchscript": "mnist_classifier.torchscript.pt"}


def _sample() -> torch.Tensor:
    return torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)  # two: a batch of one would fix the batch size at 1


def export_onnx(module: MNISTClassifier, path: Path) -> Path:
    """`torch.onnx.export` (its current, torch.export-based exporter) through Lightning's `to_onnx`, with a
    dynamic batch dimension and the input contract in the model's metadata."""
    module = module.cpu().eval()
    for name in ("onnxscript", "onnx_ir"):  # the exporter's own passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(path) as tmp:
        module.to_onnx(
            tmp,
            _sample(),
            dynamo=True,
            external_data=False,  # one file: the weights are small
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"images": {0: batch}},
            verbose=False,
        )
        model = onnx.load(tmp)
        model.doc_string = CONTRACT
        onnx.helper.set_model_props(
            model,
            {
                "input_normalisation": f"(x - {PIXEL_MEAN}) / {PIXEL_STD}, x in [0, 1]",
                "classes": ",".join(module.class_names),  # the digits 0-9 for MNIST
                "network": type(module.net).__name__,
            },
        )
        onnx.save(model, tmp)
    return path


def export_torchscript(module: MNISTClassifier, path: Path) -> Path:
    """Lightning's `to_torchscript` (a trace of the forward pass); `torch.jit.load(path)` runs it.

    TorchScript is deprecated in PyTorch 2.14 and Lightning 2.6 (in favour of `torch.export`); it still loads
    in C++ and older deployments, so we keep it as an option and silence the deprecation warnings.
    """
    module = module.cpu().eval()
    with atomic_path(path) as tmp, warnings.catch_warnings(), tmp.open("wb") as file:
        warnings.filterwarnings("ignore", message=".*(deprecated|TorchScript).*")
        # Through a Python file: a folder that cannot be written raises OSError (errno), not torch's RuntimeError.
        torch.jit.save(module.to_torchscript(method="trace", example_inputs=_sample()), file)
    return path


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}
