"""`--dtype auto` (issue 13): bfloat16 only where a step's matmuls measure faster in it, measured once and cached."""

import json
import os

import pytest
import torch

from hf_gru_attn import GruAttnConfig
from hf_gru_attn.decoding_dtype import (
    MIN_BF16_SPEEDUP,
    choose_decoding_dtype,
    cpu_isa,
    decoding_step_shapes,
    default_cache_file,
    time_step_matmuls,
)
from hf_gru_attn.translation import DecodingArguments


CONFIG = GruAttnConfig(vocab_size=100, embedding_size=8, hidden_size=16, attention_size=12)


class FakeMeasurement:
    """Stands in for `time_step_matmuls`: returns the given times and counts its calls."""

    def __init__(self, float32_ms: float, bfloat16_ms: float):
        self.times = {"float32_ms": float32_ms, "bfloat16_ms": bfloat16_ms}
        self.calls = []

    def __call__(self, shapes, device):
        self.calls.append((shapes, device))
        return dict(self.times)


@pytest.mark.parametrize(
    ("float32_ms", "bfloat16_ms", "expected"),
    [(10.0, 2.0, torch.bfloat16), (10.0, 70.0, torch.float32), (10.0, 10.0 / MIN_BF16_SPEEDUP * 1.01, torch.float32)],
)
def test_the_measurement_decides(tmp_path, float32_ms, bfloat16_ms, expected):
    fake = FakeMeasurement(float32_ms, bfloat16_ms)
    assert choose_decoding_dtype(CONFIG, "cpu", rows=4, cache_file=tmp_path / "c.json", measure=fake) == expected
    assert fake.calls == [(decoding_step_shapes(CONFIG, 4), torch.device("cpu"))]


def test_the_cache_is_written_once_and_reused(tmp_path):
    cache = tmp_path / "sub" / "dtype.json"
    fake = FakeMeasurement(10.0, 2.0)
    for _ in range(3):
        assert choose_decoding_dtype(CONFIG, rows=4, cache_file=cache, measure=fake) == torch.bfloat16
    assert len(fake.calls) == 1
    (entry,) = json.loads(cache.read_text()).values()
    assert entry == {"dtype": "bfloat16", "float32_ms": 10.0, "bfloat16_ms": 2.0}
    # other shapes are another measurement, kept beside the first
    choose_decoding_dtype(CONFIG, rows=8, cache_file=cache, measure=fake)
    assert len(fake.calls) == 2 and len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"k": {"dtype": "int8"}}'])
def test_a_damaged_cache_is_measured_again_not_crashed_on(tmp_path, content):
    cache = tmp_path / "dtype.json"
    cache.write_bytes(content)
    fake = FakeMeasurement(10.0, 70.0)
    assert choose_decoding_dtype(CONFIG, rows=4, cache_file=cache, measure=fake) == torch.float32
    assert len(fake.calls) == 1
    assert [entry["dtype"] for entry in json.loads(cache.read_text()).values()] == ["float32"]


def test_devices_without_a_measurement_get_float32(tmp_path):
    fake = FakeMeasurement(10.0, 1.0)
    assert choose_decoding_dtype(CONFIG, "meta", cache_file=tmp_path / "c.json", measure=fake) == torch.float32
    assert fake.calls == [] and not (tmp_path / "c.json").exists()
    with pytest.raises(ValueError, match="rows must be at least 1"):
        choose_decoding_dtype(CONFIG, rows=0, cache_file=tmp_path / "c.json", measure=fake)


def test_step_shapes_follow_the_config():
    untied = GruAttnConfig(vocab_size=100, embedding_size=8, hidden_size=16, attention_size=12,
                           tie_word_embeddings=False, bidirectional_encoder=False, encoder_hidden_size=16)
    # readout [s; c; E y] = 16 + 16 + 8 -> 100 words; GRU input [E y; c] = 8 + 16 -> 3 x 16 gates
    assert decoding_step_shapes(untied, 3) == [(3, 40, 100), (3, 24, 48), (3, 16, 48), (3, 16, 12)]
    tied = decoding_step_shapes(CONFIG, 3)
    readout = 16 + CONFIG.encoder_output_size + 8
    assert tied[:2] == [(3, readout, 8), (3, 8, 100)]


def test_real_timing_and_isa_report():
    times = time_step_matmuls(decoding_step_shapes(CONFIG, 2), torch.device("cpu"), repeats=1)
    assert set(times) == {"float32_ms", "bfloat16_ms"} and all(value > 0 for value in times.values())
    isa = cpu_isa()
    assert isa["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isa["isa"] in ("AMX", "AVX512-BF16", "AVX-512", "AVX2") or isa["source"] == "torch"
    assert isa["native_bf16_flags"] == (isa["isa"] in ("AMX", "AVX512-BF16"))


def test_default_cache_lives_under_hf_home():
    assert default_cache_file().is_relative_to(os.environ["HF_HOME"])  # conftest points HF_HOME at a temp folder


def test_decoding_arguments_accept_auto():
    assert DecodingArguments(dtype="auto").dtype == "auto"
    with pytest.raises(ValueError, match="--dtype must be one of"):
        DecodingArguments(dtype="int8")
