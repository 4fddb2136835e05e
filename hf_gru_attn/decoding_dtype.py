"""The CPU's instruction set, and `--dtype auto`: bfloat16 for decoding only where it measures faster than float32.

bfloat16 halves the bytes of every weight, but only CPUs with native bf16 matrix instructions (AVX512-BF16, AMX) and
GPUs with bf16 units multiply in it quickly; elsewhere PyTorch emulates it, about 7x slower than float32 on an AVX2
CPU. So [`choose_decoding_dtype`] does not trust flags: it times the matmuls of one decoding step at the model's
shapes in both dtypes once per machine and keeps the answer in a small JSON file under the Hugging Face cache folder.
"""

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import constants
from transformers.utils import logging


logger = logging.get_logger(__name__)

# bf16 rounds the weights to 8 bits of mantissa (a few tenths of BLEU at most, see the README); `auto` takes it only
# when its step matmuls are at least this much faster than float32's, so that timing noise cannot pick it.
MIN_BF16_SPEEDUP = 1.1

# /proc/cpuinfo flags, most capable first, and the name the benchmark prints for each.
_X86_ISA_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_isa() -> dict[str, str | bool]:
    """
    What this CPU offers for matrix arithmetic.

    On Linux the x86 flags come from `/proc/cpuinfo`; elsewhere (macOS, Windows, ARM without those flags) only
    `torch.backends.cpu.get_cpu_capability()` is known, which says "AVX512" also for CPUs without native bf16.

    Returns:
        `dict` with `isa` (the best of "AMX", "AVX512-BF16", "AVX-512", "AVX2" from the flags, else torch's
        capability, e.g. "DEFAULT" or "NEON"), `native_bf16_flags` (`bool`: AMX-BF16 or AVX512-BF16 present; `False`
        where the flags are unknown), `cpu` (model name, or `platform.processor()`), `torch_cpu_capability` (`str`)
        and `source` ("/proc/cpuinfo" or "torch").
    """
    flags, model = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name" and not model:
                model = value.strip()
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    isa = next((name for flag, name in _X86_ISA_FLAGS if flag in flags), None)
    return {
        "isa": isa or capability,
        "native_bf16_flags": bool(flags & {"amx_bf16", "avx512_bf16"}),
        "cpu": model or platform.processor() or platform.machine(),
        "torch_cpu_capability": capability,
        "source": "/proc/cpuinfo" if isa else "torch",
    }


def decoding_step_shapes(config, rows: int) -> list[tuple[int, int, int]]:
    """
    The `(rows, in_features, out_features)` of the matmuls of one decoder step of a `GruAttnConfig` model: the output
    layer (through the tied readout when `tie_word_embeddings`), the decoder GRU's input and recurrent projections
    and the attention query.

    Args:
        config ([`GruAttnConfig`]): the model's configuration.
        rows (`int`): decoder rows per step (batch size x beams).
    """
    hidden, embedding = config.hidden_size, config.embedding_size
    readout = hidden + config.encoder_output_size + embedding
    if config.tie_word_embeddings:
        output = [(rows, readout, embedding), (rows, embedding, config.decoder_vocab_size)]
    else:
        output = [(rows, readout, config.decoder_vocab_size)]
    gru = [(rows, embedding + config.encoder_output_size, 3 * hidden), (rows, hidden, 3 * hidden)]
    return output + gru + [(rows, hidden, config.attention_size)]


def time_step_matmuls(shapes: list[tuple[int, int, int]], device: torch.device, repeats: int = 5) -> dict[str, float]:
    """
    Milliseconds of `F.linear` (the layout of `nn.Linear`) over all `shapes`, in float32 and in bfloat16: the median
    of `repeats` interleaved rounds after one warm-up round.

    Args:
        shapes (`list[tuple[int, int, int]]`): `(rows, in_features, out_features)` of each matmul.
        device (`torch.device`): where to time (CUDA is synchronised around each round).
        repeats (`int`, *optional*, defaults to 5): timed rounds per dtype.

    Returns:
        `dict` with `float32_ms` and `bfloat16_ms`.
    """
    generator = torch.Generator().manual_seed(0)
    operands = {
        dtype: [
            (torch.randn(rows, n_in, generator=generator).to(device, dtype),
             torch.randn(n_out, n_in, generator=generator).to(device, dtype),
             torch.randn(n_out, generator=generator).to(device, dtype))
            for rows, n_in, n_out in shapes
        ]
        for dtype in (torch.float32, torch.bfloat16)
    }

    def run(dtype):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for x, weight, bias in operands[dtype]:
            F.linear(x, weight, bias)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times = {dtype: [] for dtype in operands}
    with torch.no_grad():
        for round_index in range(repeats + 1):
            for dtype in operands:
                seconds = run(dtype)
                if round_index:  # round 0 warms up
                    times[dtype].append(seconds)
    return {f"{str(dtype).removeprefix('torch.')}_ms": statistics.median(values) * 1e3
            for dtype, values in times.items()}


def default_cache_file() -> Path:
    """`$HF_HOME/hf_gru_attn/decoding_dtype.json` (by default under `~/.cache/huggingface`)."""
    return Path(constants.HF_HOME) / "hf_gru_attn" / "decoding_dtype.json"


def _machine_key(device: torch.device, shapes: list[tuple[int, int, int]]) -> str:
    """What the measurement depends on: the processor, its flags, torch's version and threads, and the shapes."""
    if device.type == "cuda":
        processor = f"cuda {torch.cuda.get_device_name(device)}"
    else:
        isa = cpu_isa()
        processor = f"cpu {isa['cpu']} {isa['isa']} {isa['torch_cpu_capability']} threads {torch.get_num_threads()}"
    return f"{processor} | torch {torch.__version__} | shapes {shapes}"


def _read_cache(path: Path) -> dict:
    """The cached measurements, `{}` when there are none; a damaged file is reported and ignored."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entries, dict) and all(
            isinstance(entry, dict) and entry.get("dtype") in ("float32", "bfloat16")
            and all(isinstance(entry.get(name), (int, float)) for name in ("float32_ms", "bfloat16_ms"))
            for entry in entries.values()
        ):
            return entries
        logger.warning(f"The dtype cache {str(path)!r} does not hold dtype measurements; measuring again.")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, ValueError) as err:
        logger.warning(f"Cannot read the dtype cache {str(path)!r} ({err}); measuring again.")
    return {}


def _write_cache(path: Path, entries: dict) -> None:
    """Writes `entries` atomically (a temporary file renamed over `path`); an unwritable folder only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as err:
        logger.warning(f"Cannot write the dtype cache {str(path)!r} ({err}); the choice will be measured again.")


def choose_decoding_dtype(
    config,
    device: str | torch.device = "cpu",
    rows: int = 32,
    cache_file: str | os.PathLike | None = None,
    measure: Callable[[list[tuple[int, int, int]], torch.device], dict[str, float]] = time_step_matmuls,
) -> torch.dtype:
    """
    `torch.bfloat16` if one decoding step's matmuls run at least `MIN_BF16_SPEEDUP` times faster in bfloat16 than in
    float32 on `device` at the model's shapes ([`decoding_step_shapes`]), else `torch.float32`.

    The measurement (well under a second where bf16 is native, a few seconds where it is emulated) is made once per
    processor, torch version, thread count and shapes, and kept in `cache_file`; a damaged cache file is measured
    again and rewritten. CUDA devices without bf16 support (`torch.cuda.is_bf16_supported()`) and devices other than
    CPU and CUDA (MPS, XPU, ...) get float32 without a measurement.

    Args:
        config ([`GruAttnConfig`]): the model's configuration.
        device (`str` or `torch.device`, *optional*, defaults to "cpu"): where the model decodes.
        rows (`int`, *optional*, defaults to 32): decoder rows per step (batch size x beams).
        cache_file (`str` or `os.PathLike`, *optional*): defaults to [`default_cache_file`].
        measure (`Callable`, *optional*): `measure(shapes, device) -> {"float32_ms": ..., "bfloat16_ms": ...}`;
            defaults to [`time_step_matmuls`] (tests pass a fake).

    Returns:
        `torch.dtype`: `torch.bfloat16` or `torch.float32`.

    Raises:
        ValueError: if `rows` is not positive.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}.")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        logger.info(f"--dtype auto: float32 on {device} (bf16 decoding is only measured on CPUs and bf16 GPUs).")
        return torch.float32
    shapes = decoding_step_shapes(config, rows)
    path = Path(cache_file) if cache_file is not None else default_cache_file()
    key = _machine_key(device, shapes)
    entries = _read_cache(path)
    if key not in entries:
        times = measure(shapes, device)
        faster = times["float32_ms"] / times["bfloat16_ms"] >= MIN_BF16_SPEEDUP
        entries[key] = {"dtype": "bfloat16" if faster else "float32", **times}
        _write_cache(path, entries)
    entry = entries[key]
    logger.info(
        f"--dtype auto: {entry['dtype']} (one step's matmuls take {entry['float32_ms']:.2f} ms in float32 and "
        f"{entry['bfloat16_ms']:.2f} ms in bfloat16 here; cached in {str(path)!r})."
    )
    return torch.bfloat16 if entry["dtype"] == "bfloat16" else torch.float32
