"""What a run folder records about the machine: the processor and the instructions torch's kernels use."""

from pathlib import Path

import pytest
import torch

from mnist_cnn.run_record import environment, has_native_bf16, machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile ht

processor\t: 1
model name\t: another core's line, not read
"""


def test_machine_reads_the_first_processor_and_its_vector_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    found = machine(cpuinfo)
    assert found["cpu"] == "AMD EPYC 9R14 96-Core Processor" and found["cpu_family_model"] == "25/17"
    assert found["simd_flags"] == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "fma", "sse4_1", "sse4_2"]


def test_machine_reads_arm_features_and_tolerates_missing_fields(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 25\nFeatures\t: fp asimd sve evtstrm bf16\n")
    found = machine(cpuinfo)
    assert found["simd_flags"] == ["asimd", "bf16", "sve"] and found["cpu_family_model"] is None


@pytest.mark.parametrize(
    ("flags", "caps", "native"),
    [
        (["avx2", "avx512_bf16", "avx512f"], {}, True),
        (["amx_bf16", "avx2"], {}, True),
        (["asimd", "bf16"], {}, True),
        (["avx2", "avx512f"], {}, False),  # AVX-512 without its bfloat16 extension
        (["avx2", "avx512_bf16"], {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # there, but capped away
        (["avx2", "avx512_bf16"], {"DNNL_MAX_CPU_ISA": "avx512_core"}, False),  # AVX-512 without its bf16
        (["avx512_bf16"], {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx2"}, True),
        (["amx_bf16"], {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, True),
    ],
)
def test_native_bf16_needs_its_instructions_uncapped(flags: list[str], caps: dict[str, str], native: bool) -> None:
    assert has_native_bf16({"simd_flags": flags, "isa_limits": caps}) is native


def test_machine_records_the_instruction_caps_set_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    assert machine(tmp_path / "missing")["isa_limits"].get("ONEDNN_MAX_CPU_ISA") == "AVX2"
    assert "MKL_ENABLE_INSTRUCTIONS" not in machine(tmp_path / "missing")["isa_limits"]


def test_machine_without_cpuinfo_still_names_what_torch_uses(tmp_path: Path) -> None:
    found = machine(tmp_path / "missing")
    assert found["cpu_family_model"] is None and found["simd_flags"] == []
    assert found["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_the_environment_record_includes_the_machine() -> None:
    assert environment()["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
