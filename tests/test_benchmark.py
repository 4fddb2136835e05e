"""scripts/benchmark.py at tiny sizes: it runs in a subprocess and reports every row. Timings are not asserted."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = ["ours", "ours default"]
GENERATE = ["seed greedy loop"] + [f"{model} {mode}" for model in MODELS for mode in ("greedy", "beam5")]
EXPECTED_ROWS = {
    "train_fp32": ["matmul peak: fp32 mm 128^2", "seed", *MODELS],
    "train_bf16_autocast": ["matmul peak: bf16 linear 128^2", "seed", *MODELS],
    "bf16_loss": ["fp32", "bf16_autocast"],
    "generate_fp32": ["matmul peak: fp32 mm 128^2", *GENERATE],
    "generate_bf16": ["matmul peak: bf16 linear 128^2", *GENERATE],
    "greedy_batches": [f"{name} B={batch_size}" for batch_size in (2, 4)
                       for name in ("seed greedy loop", "ours greedy", "ours greedy bf16")],
    **{f"shortlist_batch{size}": ["matmul peak: fp32 mm 128^2", "seed greedy loop", "ours greedy",
                                  "ours greedy shortlist", "ours beam5 shortlist"] for size in (4, 8)},
    "decode_scaling": [f"{who} S={length}" for who in ("ours", "seed") for length in (4, 8, 16)],
    "peak_memory": [f"train step: {name}" for name in ("seed", *MODELS)]
    + ["greedy: seed loop"]
    + [f"{mode}: {model}" for model in MODELS for mode in ("greedy", "beam5")],
}
# what torch.backends.cpu.get_cpu_capability() says where /proc/cpuinfo has no x86 flags (macOS, ARM)
ISA_FROM_TORCH = ("DEFAULT", "NEON", "SVE128", "SVE256", "SVE512", "VSX", "ZVECTOR", "AVX2", "AVX512")
HAS_ONNX_RUNTIME = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
if HAS_ONNX_RUNTIME:
    for batch_size in (2, 4):
        EXPECTED_ROWS[f"onnx_runtime_batch{batch_size}"] = ["matmul peak: fp32 mm 128^2"] + [
            f"{who} {mode}" for mode in ("greedy", "beam5") for who in ("eager", "onnx runtime")
        ]
EXPECTED_TARGETS = [
    "bf16 autocast loss vs fp32 after the loss-check steps (%)",
    *[f"batch {size}: ours {mode} / seed {loop}" for size in (4, 8)
      for mode, loop in (("greedy shortlist", "loop"), ("beam5 shortlist", "greedy loop"))],
    "train fp32: ours / seed",
    "train fp32: ours utilisation of the fp32 matmul peak (%)",
    "greedy fp32: ours / seed loop fp32",
    "ours beam5 fp32 / ours greedy fp32",
    "train bf16 autocast: ours / seed fp32",
    "greedy bf16: ours / seed loop fp32",
    "ours beam5 bf16 / ours greedy bf16",
]
EXPECTED_TARGETS[1:1] = [f"greedy fp32 batch {batch_size}: ours / seed loop fp32" for batch_size in (2, 4)]
if HAS_ONNX_RUNTIME:
    EXPECTED_TARGETS += [f"onnx runtime greedy / eager greedy, batch {batch_size}" for batch_size in (2, 4)]


def run_quick_benchmark(*flags: str, timeout: int = 120) -> dict:
    """Runs the benchmark at tiny sizes on one thread and returns its JSON report."""
    # One thread: at these sizes, thread hand-offs on a busy machine cost more than the work.
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--json", "--threads", "1", *flags],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_quick_benchmark_reports_every_row():
    report = run_quick_benchmark()

    found = {}
    for row in report["rows"]:
        found.setdefault(row["section"], []).append(row["name"])
        numbers = [value for key, value in row.items() if key not in ("section", "name", "unit") and value is not None]
        assert numbers and all(isinstance(value, (int, float)) and math.isfinite(value) for value in numbers), row
    assert found == EXPECTED_ROWS

    assert [target["name"] for target in report["targets"]] == EXPECTED_TARGETS
    assert all(isinstance(target["met"], bool) for target in report["targets"])
    assert report["header"]["threads"] == 1
    assert report["header"]["isa"].split(" ")[0] in ("AMX", "AVX512-BF16", "AVX-512", "AVX2", *ISA_FROM_TORCH)


@pytest.mark.slow
def test_compile_row_reports_its_compile_time():
    # torch.compile needs a C++ compiler and takes about a minute even at tiny sizes.
    report = run_quick_benchmark("--compile", "--bf16", "false", timeout=900)
    row = next(row for row in report["rows"] if row["section"] == "train_fp32" and row["name"] == "ours compiled")
    assert row["compile_seconds"] > 0 and row["throughput"] > 0
    assert any(row["name"] == "train step: ours compiled" for row in report["rows"] if row["section"] == "peak_memory")
