"""The notebooks run top to bottom (headless, CPU) and are committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from conftest import write_mnist
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


@pytest.fixture(scope="module")
def notebook_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough training images for the default 5,000-image validation split."""
    return write_mnist(tmp_path_factory.mktemp("notebook-data"), train_size=5200, test_size=200)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes(path: Path, tmp_path: Path, notebook_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_CNN_DATA", str(notebook_data))  # the kernel inherits the environment
    monkeypatch.delenv("MNIST_CNN_RUN", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert images, "the notebook should draw its figures"
