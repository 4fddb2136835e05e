"""Seed checkpoint conversion: `scripts/convert_seed_checkpoint.py` (run as a subprocess) and
`hf_gru_attn.convert_seed.convert_seed_state_dict` give a model whose logits and greedy output equal the seed's."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from hf_gru_attn import GruAttnForConditionalGeneration
from hf_gru_attn.convert_seed import convert_seed_state_dict


REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "convert_seed_checkpoint.py"


def load_script(name: str):
    """Imports `scripts/<name>.py` by path (scripts/ is not put on sys.path: its `evaluate.py` would shadow the
    `evaluate` package for every other test)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Seq2Seq = load_script("seed_reference").Seq2Seq


VOCAB, EMBEDDING, HIDDEN = 23, 8, 16
BOS, EOS = 1, 2


def make_seed(seed: int = 0) -> Seq2Seq:
    """A random seed model; weights scaled up so that greedy outputs vary (torch's default init is near-uniform)."""
    torch.manual_seed(seed)
    model = Seq2Seq(VOCAB, EMBEDDING, HIDDEN)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)
    return model.eval()


def run_converter(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, env=environment, timeout=300
    )


def sources_and_targets(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded source `(4, 9)` and target `(4, 7)` ids; no special ids inside (the seed has no padding)."""
    source = torch.randint(3, VOCAB, (4, 9), generator=generator)
    target = torch.randint(3, VOCAB, (4, 7), generator=generator)
    target[:, 0] = BOS
    return source, target


def cut_at_eos(row: list[int]) -> list[int]:
    """The tokens up to and including the first EOS (all of them if there is none)."""
    return row[: row.index(EOS) + 1] if EOS in row else row


def test_converted_checkpoint_matches_the_seed_model(tmp_path):
    seed = make_seed()
    checkpoint = tmp_path / "seed.pt"
    torch.save(seed.state_dict(), checkpoint)
    output_dir = tmp_path / "converted"
    result = run_converter("--checkpoint", str(checkpoint), "--output_dir", str(output_dir))
    assert result.returncode == 0, result.stderr
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {p.name for p in output_dir.iterdir()}

    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir).eval()
    assert isinstance(model, GruAttnForConditionalGeneration)
    config = model.config
    assert (config.vocab_size, config.decoder_vocab_size, config.embedding_size, config.hidden_size) == (
        VOCAB, VOCAB, EMBEDDING, HIDDEN)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id) == (
        0, 1, 2, 1)

    source, target = sources_and_targets(torch.Generator().manual_seed(1))
    with torch.no_grad():
        # Seq2Seq.forward(src, tgt) feeds tgt[:, :-1] and returns one logit row per fed token
        expected = seed(source, target)
        logits = model(input_ids=source, decoder_input_ids=target[:, :-1]).logits
    assert logits.shape == expected.shape == (4, 6, VOCAB)
    assert (logits - expected).abs().max() <= 1e-5

    steps = 12
    seed_tokens = seed.greedy(source, BOS, steps)  # (4, 12), never stops
    with torch.no_grad():
        generated = model.generate(source, max_new_tokens=steps, do_sample=False, num_beams=1)
    assert torch.all(generated[:, 0] == BOS)
    lengths = []
    for row, seed_row in zip(generated[:, 1:].tolist(), seed_tokens.tolist()):
        expected_row = cut_at_eos(seed_row)
        assert row[: len(expected_row)] == expected_row
        assert all(token == 0 for token in row[len(expected_row):])  # padding after EOS
        lengths.append(len(expected_row))
    assert max(lengths) >= 4  # the comparison covers several steps, not only an immediate EOS


def test_greedy_equals_seed_for_all_steps_when_eos_is_unreachable():
    """With EOS set to an id the model never predicts, generate runs every step exactly as the seed's greedy."""
    seed = make_seed(seed=3)
    with torch.no_grad():
        seed.decoder.fc_out.bias[EOS] = -1e4
    model = convert_seed_state_dict(seed.state_dict())
    source, _ = sources_and_targets(torch.Generator().manual_seed(4))
    with torch.no_grad():
        generated = model.generate(source, max_new_tokens=10, do_sample=False, num_beams=1)
    assert torch.equal(generated[:, 1:], seed.greedy(source, BOS, 10))


def test_special_ids_and_separate_vocabularies():
    torch.manual_seed(5)
    seed = Seq2Seq(VOCAB, EMBEDDING, HIDDEN)
    state = seed.state_dict()
    # a seed-shaped model with a larger target vocabulary (the seed's code uses one vocabulary; the converter
    # reads the two sizes from the two embeddings)
    state["decoder.embedding.weight"] = torch.randn(30, EMBEDDING)
    state["decoder.fc_out.weight"] = torch.randn(30, 2 * HIDDEN + EMBEDDING)
    state["decoder.fc_out.bias"] = torch.randn(30)
    model = convert_seed_state_dict(state, pad_token_id=3, bos_token_id=4, eos_token_id=5)
    assert (model.config.vocab_size, model.config.decoder_vocab_size) == (VOCAB, 30)
    assert (model.config.pad_token_id, model.config.decoder_start_token_id, model.config.eos_token_id) == (3, 4, 5)
    assert model.generation_config.decoder_start_token_id == 4
    attention = model.model.decoder.attention
    weight = state["decoder.attention.attn.weight"]
    assert torch.equal(attention.query_proj.weight, weight[:, :HIDDEN])
    assert torch.equal(attention.key_proj.weight, weight[:, HIDDEN:])
    assert torch.equal(attention.key_proj.bias, state["decoder.attention.attn.bias"])
    assert torch.equal(model.lm_head.weight, state["decoder.fc_out.weight"])


def test_missing_keys_are_named():
    state = make_seed().state_dict()
    del state["decoder.attention.v.weight"]
    del state["encoder.rnn.bias_hh_l0"]
    with pytest.raises(ValueError, match="missing keys") as error:
        convert_seed_state_dict(state)
    assert "decoder.attention.v.weight" in str(error.value) and "encoder.rnn.bias_hh_l0" in str(error.value)


def test_unexpected_keys_are_named():
    state = make_seed().state_dict()
    state["encoder.rnn.weight_ih_l1"] = torch.zeros(3 * HIDDEN, HIDDEN)
    with pytest.raises(ValueError, match=r"encoder\.rnn\.weight_ih_l1"):
        convert_seed_state_dict(state)


def test_shapes_that_do_not_fit_are_rejected():
    state = make_seed().state_dict()
    state["decoder.attention.attn.weight"] = torch.zeros(HIDDEN, 2 * HIDDEN + 1)
    with pytest.raises(ValueError, match=r"decoder\.attention\.attn\.weight.*\(16, 33\).*\(16, 32\)"):
        convert_seed_state_dict(state)
    state = make_seed().state_dict()
    state["decoder.embedding.weight"] = torch.zeros(VOCAB, EMBEDDING + 2)  # decoder embedding size != encoder's
    with pytest.raises(ValueError, match=r"decoder\.embedding\.weight"):
        convert_seed_state_dict(state)


def test_special_id_outside_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="eos_token_id"):
        convert_seed_state_dict(make_seed().state_dict(), eos_token_id=VOCAB)


def test_cli_refuses_non_empty_output_dir_and_bad_checkpoint(tmp_path, capsys):
    main = load_script("convert_seed_checkpoint").main
    checkpoint = tmp_path / "seed.pt"
    torch.save(make_seed().state_dict(), checkpoint)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("x")
    assert main(["--checkpoint", str(checkpoint), "--output_dir", str(output_dir)]) == 1
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert [p.name for p in output_dir.iterdir()] == ["keep.txt"]

    arguments = ["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), "--overwrite_output_dir",
                 "--eos_token_id", "5"]
    assert main(arguments) == 0
    assert AutoModelForSeq2SeqLM.from_pretrained(output_dir).config.eos_token_id == 5

    broken = tmp_path / "broken.pt"
    state = make_seed().state_dict()
    del state["decoder.fc_out.bias"]
    torch.save(state, broken)
    assert main(["--checkpoint", str(broken), "--output_dir", str(tmp_path / "other")]) == 1
    assert "decoder.fc_out.bias" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()

    not_a_checkpoint = tmp_path / "text.pt"
    not_a_checkpoint.write_text("hello")
    assert main(["--checkpoint", str(not_a_checkpoint), "--output_dir", str(tmp_path / "other")]) == 1
    assert "Cannot read" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "absent.pt"), "--output_dir", str(tmp_path / "other")]) == 1
    assert "is not a file" in capsys.readouterr().err
