"""Do the exported models compute what torch computes? Logits and accuracy on the whole MNIST test set.

    python benchmarks/export_parity.py --ckpt outputs/<date>/<time>/checkpoints/last.ckpt --data-dir ../shared/data

Exports the checkpoint to ONNX and TorchScript (`mnist_cnn.exporters`, into a temporary folder), runs the
10,000 test images through torch, onnxruntime and `torch.jit.load`, and prints the largest logit difference,
the number of images whose predicted digit differs, and each one's accuracy.
"""

import argparse
import tempfile
from pathlib import Path

import onnxruntime
import torch
from torchvision.datasets import MNIST
from torchvision.transforms import v2

from mnist_cnn.exporters import export_onnx, export_torchscript
from mnist_cnn.trained import classifier_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by mnist-cnn-train")
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw/")
    args = parser.parse_args()

    test = MNIST(args.data_dir, train=False, download=False)
    scale = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.5,), (0.5,))])
    images, labels = scale(test.data.unsqueeze(1)), test.targets
    model = classifier_from_checkpoint(args.ckpt).eval()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        onnx_path = export_onnx(model, Path(folder) / "model.onnx")
        scripted = torch.jit.load(export_torchscript(model, Path(folder) / "model.pt"))
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        logits = {
            "torch": torch.cat([model(batch) for batch in images.split(1000)]),
            "onnxruntime": torch.cat(
                [torch.from_numpy(session.run(None, {"image": b.numpy()})[0]) for b in images.split(1000)]
            ),
            "torchscript": torch.cat([scripted(batch) for batch in images.split(1000)]),
        }
    reference = logits["torch"]
    print("| runtime | max abs logit difference from torch | predictions that differ | test accuracy |")
    print("|---|---|---|---|")
    for name, values in logits.items():
        difference = float((values - reference).abs().max())
        differ = int((values.argmax(1) != reference.argmax(1)).sum())
        accuracy = float((values.argmax(1) == labels).float().mean())
        print(f"| {name} | {difference:.2e} | {differ} | {accuracy:.2%} |")


if __name__ == "__main__":
    main()
