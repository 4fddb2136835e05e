"""ONNX export (`hf_gru_attn.onnx_export`, `scripts/export_onnx.py`) and ONNX Runtime decoding
(`hf_gru_attn.onnx_decoding`). Skipped when `onnx` or `onnxruntime` is not installed.

The reference is the PyTorch model's own `generate()` (itself checked against hand-written loops in
test_generation.py): the ONNX Runtime model must return the same tokens, greedy and beam search, on the first
sentences of the bundled Multi30k test2016 source side. The models are random, with `initializer_range=1.0` so that
argmax decisions have clear margins, and an EOS bias set from the model's own logits so that some outputs end early
and others run to the length limit.
"""

import itertools
import runpy
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from transformers import GenerationConfig, GenerationMixin

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.data import BUNDLED_MULTI30K_DIR
from hf_gru_attn.tokenization import train_tokenizer
from hf_gru_attn.translation import translate


pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hf_gru_attn.onnx_decoding import GruAttnOnnxForConditionalGeneration  # noqa: E402
from hf_gru_attn.onnx_export import export_onnx  # noqa: E402


EOS = 2
MAX_NEW_TOKENS = 24
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "export_onnx.py"
CONFIGS = {
    "default": {},
    "seed": {"bidirectional_encoder": False, "decoder_init": "last", "tie_word_embeddings": False},
    "general_2_layers": {"attention_type": "general", "encoder_layers": 2, "decoder_layers": 2},
    "dot_truncated": {"attention_type": "dot", "max_source_positions": 8},
}


def bundled_lines(name: str, count: int) -> list[str]:
    with open(BUNDLED_MULTI30K_DIR / name, encoding="utf-8") as file:
        return [line.strip() for line in itertools.islice(file, count)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter(bundled_lines("train.de", 300) + bundled_lines("train.en", 300)), vocab_size=400)


@pytest.fixture(scope="module")
def batches(tokenizer):
    """The first 48 test2016 sources in three right-padded batches of 16."""
    sources = bundled_lines("test2016.de", 48)
    return [tokenizer(sources[start : start + 16], padding=True, return_tensors="pt") for start in range(0, 48, 16)]


def make_model(tokenizer, batches, seed: int = 0, **overrides) -> GruAttnForConditionalGeneration:
    """A random model whose EOS bias makes about a tenth of the later positions, and at most a fifth of the first
    ones, end the output: from the margins of the greedy outputs decoded with EOS suppressed."""
    torch.manual_seed(seed)
    sizes = {"vocab_size": len(tokenizer), "embedding_size": 16, "hidden_size": 32, "initializer_range": 1.0}
    config = GruAttnConfig(**{**sizes, **overrides})
    model = GruAttnForConditionalGeneration(config).eval()
    margins = []
    with torch.no_grad():
        for batch in batches:
            output = model.generate(**batch, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
                                    min_new_tokens=MAX_NEW_TOKENS)
            logits = model(**batch, decoder_input_ids=output[:, :-1]).logits
            others = logits.index_fill(-1, torch.tensor([EOS]), float("-inf")).max(-1).values
            margins.append(others - logits[..., EOS])
        margins = torch.cat(margins)
        model.lm_head.bias[EOS] += torch.minimum(margins[:, 1:].quantile(0.1), margins[:, 0].quantile(0.2))
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tokenizer, batches, tmp_path_factory):
    """`(model, onnx_model, onnx_dir)` for one architecture of `CONFIGS`."""
    model = make_model(tokenizer, batches, **CONFIGS[request.param])
    onnx_dir = tmp_path_factory.mktemp(f"onnx_{request.param}")
    export_onnx(model, onnx_dir, tokenizer=tokenizer)
    return model, GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir), onnx_dir


def generate_both(model, onnx_model, batch, **kwargs):
    with torch.no_grad():
        return model.generate(**batch, **kwargs), onnx_model.generate(**batch, **kwargs)


def test_greedy_tokens_equal_pytorch(exported, batches):
    model, onnx_model, _ = exported
    outputs = []
    for batch in batches:
        with mock.patch.object(onnx_model, "greedy_search", wraps=onnx_model.greedy_search) as greedy_search:
            expected, got = generate_both(model, onnx_model, batch, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
        assert greedy_search.call_count == 1
        assert torch.equal(got, expected)
        # The plain greedy loop and transformers' own, which the ONNX model runs for any other setting.
        with torch.no_grad():
            got = GenerationMixin.generate(onnx_model, **batch, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
        assert torch.equal(got, expected)
        outputs.extend(expected.tolist())
    # Not a trivial output: distinct sentences, some ended by EOS, some cut by the length limit.
    assert len({tuple(row) for row in outputs}) >= 5
    ended = [EOS in row for row in outputs]
    assert any(ended) and not all(ended)


def test_greedy_loop_runs_with_the_defaults_written_out(default_export, batches):
    # A generation_config.json saved by the Trainer spells out transformers' defaults (repetition_penalty=1.0, ...).
    model, onnx_dir = default_export
    onnx_model = GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir)
    defaults = GenerationConfig._get_default_generation_params()
    settings = GenerationConfig(**{**defaults, **model.generation_config.to_diff_dict()})
    with mock.patch.object(onnx_model, "greedy_search", wraps=onnx_model.greedy_search) as greedy_search:
        expected, got = generate_both(model, onnx_model, batches[0], generation_config=settings, num_beams=1)
    assert greedy_search.call_count == 1
    assert torch.equal(got, expected)


def test_greedy_with_a_logits_processor_equals_pytorch(exported, batches):
    model, onnx_model, _ = exported
    for batch in batches:
        expected, got = generate_both(model, onnx_model, batch, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
                                      no_repeat_ngram_size=2)
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"length_penalty": 0.6, "early_stopping": False, "max_new_tokens": MAX_NEW_TOKENS},
     {"num_return_sequences": 2, "max_new_tokens": MAX_NEW_TOKENS}],
)
def test_beam_search_tokens_equal_pytorch(exported, batches, kwargs):
    # {}: the shipped generation config (5 beams, early stopping, length penalty 1, max_length 128).
    model, onnx_model, _ = exported
    for batch in batches:
        expected, got = generate_both(model, onnx_model, batch, **kwargs)
        assert torch.equal(got, expected)


def test_folder_holds_the_generation_config_and_translate_works(exported, tokenizer):
    model, onnx_model, onnx_dir = exported
    assert onnx_model.generation_config.to_dict() == model.generation_config.to_dict()
    sources = bundled_lines("test2016.de", 20)
    expected = translate(model, tokenizer, sources, batch_size=8)
    assert translate(onnx_model, tokenizer, sources, batch_size=8) == expected


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def default_export(tokenizer, batches, tmp_path_factory):
    model = make_model(tokenizer, batches)
    onnx_dir = tmp_path_factory.mktemp("onnx_default")
    export_onnx(model, onnx_dir, tokenizer=tokenizer)
    return model, onnx_dir


def copy_export(onnx_dir, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(onnx_dir, target)
    return target


def test_missing_folder_or_file_is_a_clear_error(default_export, tmp_path):
    _, onnx_dir = default_export
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(tmp_path / "nowhere")
    for name in ("encoder.onnx", "decoder_step.onnx", "config.json"):
        folder = copy_export(onnx_dir, tmp_path / name)
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"has no {name}"):
            GruAttnOnnxForConditionalGeneration.from_pretrained(folder)


def test_corrupt_graph_is_a_clear_error(default_export, tmp_path):
    _, onnx_dir = default_export
    folder = copy_export(onnx_dir, tmp_path)
    data = (folder / "decoder_step.onnx").read_bytes()
    (folder / "decoder_step.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(folder)


def test_graph_or_config_of_another_model_is_refused(default_export, tokenizer, batches, tmp_path):
    model, onnx_dir = default_export
    other = make_model(tokenizer, batches, hidden_size=48)
    other_dir = tmp_path / "other"
    export_onnx(other, other_dir)
    mixed = copy_export(onnx_dir, tmp_path)
    shutil.copy(other_dir / "encoder.onnx", mixed / "encoder.onnx")
    with pytest.raises(ValueError, match="another config"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(mixed)
    with pytest.raises(ValueError, match="another config"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir, config=other.config)
    # Same architecture, other weights: the two graphs of the folder come from different exports.
    retrained = make_model(tokenizer, batches, seed=1)
    retrained_dir = tmp_path / "retrained"
    export_onnx(retrained, retrained_dir)
    mixed = copy_export(onnx_dir, tmp_path / "same_config")
    shutil.copy(retrained_dir / "decoder_step.onnx", mixed / "decoder_step.onnx")
    with pytest.raises(ValueError, match="different exports"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(mixed)


def test_bad_decoding_input_is_a_clear_error(default_export, batches):
    model, onnx_dir = default_export
    onnx_model = GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir)
    batch = batches[0]
    left_padded = {name: tensor.flip(1) for name, tensor in batch.items()}
    with pytest.raises(ValueError, match="right-padded"):
        onnx_model.generate(**left_padded, max_new_tokens=3)
    with pytest.raises(ValueError, match="outside"):
        onnx_model.generate(batch["input_ids"] + model.config.vocab_size, max_new_tokens=3)
    with pytest.raises(ValueError, match="neither"):
        onnx_model.generate(**batch, max_new_tokens=3, output_attentions=True, return_dict_in_generate=True)
    # Teacher forcing over a decoder prefix is not exported (only the last token would be read).
    with pytest.raises(ValueError, match="without a cache"):
        onnx_model(decoder_input_ids=batch["input_ids"][:, :3], encoder_outputs=onnx_model.get_encoder()(**batch),
                   attention_mask=batch["attention_mask"])


def test_save_pretrained_is_refused(default_export, tmp_path):
    _, onnx_dir = default_export
    with pytest.raises(NotImplementedError, match="copy its folder"):
        GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir).save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())


def test_export_refuses_a_bfloat16_model(default_export, tmp_path):
    model, _ = default_export
    with pytest.raises(ValueError, match="float32"):
        export_onnx(GruAttnForConditionalGeneration(model.config).to(torch.bfloat16), tmp_path)
    assert not any(tmp_path.iterdir())


def test_export_script(default_export, tokenizer, batches, tmp_path, capsys):
    model, _ = default_export
    model_dir, onnx_dir = tmp_path / "model", tmp_path / "onnx"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    main = runpy.run_path(str(SCRIPT))["main"]
    argv = ["--model", str(model_dir), "--output_dir", str(onnx_dir)]
    assert main(argv) == 0
    onnx_model = GruAttnOnnxForConditionalGeneration.from_pretrained(onnx_dir)
    expected, got = generate_both(model, onnx_model, batches[0], num_beams=5, max_new_tokens=MAX_NEW_TOKENS)
    assert torch.equal(got, expected)

    # A second export into the same folder is refused and leaves the folder as it was.
    before = {path.name: path.read_bytes() for path in onnx_dir.iterdir()}
    capsys.readouterr()
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in onnx_dir.iterdir()} == before
    # So is a folder that is not a model.
    assert main(["--model", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
