"""What a run folder keeps so that the run can be repeated exactly: resolved config, versions, git commit.

Hydra already writes `config.yaml` (with interpolations), `overrides.yaml` and `hydra.yaml` into the run's
`.hydra/` folder; beside them go `resolved_config.yaml` (every value as this run used it) and
`environment.json` (Python, every installed package's version, the git commit and whether the tree was dirty,
and the processor with the vector instructions torch's kernels use).
"""

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.files import atomic_path, write_json

SOURCE_DIR = Path(__file__).resolve().parent
RESOLVED_CONFIG = "resolved_config.yaml"


def record_dir(cfg: DictConfig) -> Path | None:
    """The run's Hydra output subfolder (`.hydra`); None in the processes of a DDP run other than rank 0.

    Without Hydra's runtime (a config from Hydra's compose API, as in the notebooks): `<paths.output_dir>/.hydra`.
    """
    if rank_zero_only.rank != 0:  # the rank from the environment: Lightning's, torchrun's or SLURM's
        return None
    if not HydraConfig.initialized():
        return Path(cfg.paths.output_dir) / ".hydra"
    hydra = HydraConfig.get()
    return None if hydra.output_subdir is None else Path(hydra.runtime.output_dir) / hydra.output_subdir


def write_run_record(cfg: DictConfig) -> None:
    folder = record_dir(cfg)
    if folder is None:
        return
    with atomic_path(folder / RESOLVED_CONFIG) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_json(folder / "environment.json", environment())


def environment() -> dict[str, Any]:
    return {
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_state(),
        "packages": {dist.metadata["Name"]: dist.version for dist in sorted_distributions()},
        "machine": machine(),
    }


SIMD_FLAG_PREFIXES = ("avx", "amx", "fma", "sse4", "asimd", "sve", "bf16")  # x86's, then ARM's
# Caps on the instructions of torch's own kernels, oneDNN's (convolutions) and MKL's (matrix products)
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The processor and the vector instructions torch's kernels use.

    With one thread a run repeats to the digit on one machine, yet the same command gave other digits on other
    days (docs/recipes.md): kernels built for other instructions sum in another order. This says which.
    """
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").split("\n\n", 1)[0].splitlines():  # the first processor
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    listed = fields.get("flags") or fields.get("Features", "")  # x86 calls them flags, ARM Features
    flags = sorted(flag for flag in listed.split() if flag.startswith(SIMD_FLAG_PREFIXES))
    family, model = fields.get("cpu family"), fields.get("model")
    return {
        "cpu": fields.get("model name") or platform.processor() or None,
        "cpu_family_model": f"{family}/{model}" if family and model else None,
        "cores": os.cpu_count(),
        "simd_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_limits": {name: os.environ[name] for name in ISA_LIMITS if name in os.environ},
    }


NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86's two, ARM's
ONEDNN_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN runs bf16 convolutions and matrix products


def has_native_bf16(found: dict[str, Any]) -> bool:
    """Whether the CPU computes bfloat16 in hardware and no oneDNN cap hides it; else it is emulated, slowly."""
    caps = [found["isa_limits"][name].upper() for name in ONEDNN_CAPS if name in found["isa_limits"]]
    hidden = any(not any(keep in cap for keep in ("BF16", "AMX", "ALL")) for cap in caps)
    return bool(NATIVE_BF16_FLAGS.intersection(found["simd_flags"])) and not hidden


def sorted_distributions() -> list[metadata.Distribution]:
    return sorted(metadata.distributions(), key=lambda dist: (dist.metadata["Name"] or "").lower())


def git_state() -> dict[str, Any]:
    """The commit of the source tree this code runs from, and whether it had uncommitted changes; None outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
