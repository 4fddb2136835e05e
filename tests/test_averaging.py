"""Checkpoint averaging (`hf_gru_attn.averaging`, `scripts/average_checkpoints.py`).

Checkpoints are tiny random models with different seeds, saved with `save_pretrained` into `checkpoint-<step>`
folders (with a `trainer_state.json`, as the Trainer writes them); the expected mean is computed here from the saved
safetensors files.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.averaging import (
    average_checkpoints,
    average_last_checkpoints,
    last_checkpoints,
    load_averaged_weights,
    save_averaged_model,
)
from hf_gru_attn.tokenization import train_tokenizer


SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "average_checkpoints.py"
CORPUS = ["the cat sat on the mat", "a dog ran in the park", "das ist ein kleiner test", "wir gehen nach hause"]


def tiny_config(**overrides) -> GruAttnConfig:
    settings = {"vocab_size": 60, "embedding_size": 8, "hidden_size": 16, "share_embeddings": True,
                "tie_word_embeddings": True}
    return GruAttnConfig(**{**settings, **overrides})


def write_checkpoint(run_dir: Path, step: int, config: GruAttnConfig, tokenizer=None) -> Path:
    """A `checkpoint-<step>` folder holding a random model seeded with `step` (and the tokenizer, if given)."""
    torch.manual_seed(step)
    checkpoint = run_dir / f"checkpoint-{step}"
    GruAttnForConditionalGeneration(config).save_pretrained(checkpoint)
    if tokenizer is not None:
        tokenizer.save_pretrained(checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return checkpoint


def expected_mean(checkpoints: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of the stored tensors, summed one checkpoint at a time in float64."""
    weights = [load_file(str(checkpoint / "model.safetensors")) for checkpoint in checkpoints]
    return {name: (sum(w[name].double() for w in weights) / len(weights)).float() for name in weights[0]}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter(CORPUS), vocab_size=60)


@pytest.fixture
def run_dir(tmp_path, tokenizer):
    """A run folder with checkpoints at steps 5, 10, 20 and 100 (numeric order differs from name order)."""
    for step in (5, 10, 20, 100):
        write_checkpoint(tmp_path / "run", step, tiny_config(vocab_size=len(tokenizer)), tokenizer)
    return tmp_path / "run"


def test_average_is_the_mean_of_the_stored_tensors(run_dir):
    checkpoints = [run_dir / "checkpoint-5", run_dir / "checkpoint-20", run_dir / "checkpoint-100"]
    averaged = average_checkpoints([str(path) for path in checkpoints])
    expected = expected_mean(checkpoints)
    assert averaged.keys() == expected.keys() and "lm_head.weight" not in averaged  # the tied copy is not stored
    for name, tensor in expected.items():
        assert averaged[name].dtype == torch.float32
        torch.testing.assert_close(averaged[name], tensor, rtol=0, atol=1e-7)
    # the seeds differ, so the mean is none of the inputs
    first = load_file(str(checkpoints[0] / "model.safetensors"))
    assert not torch.equal(averaged["readout.weight"], first["readout.weight"])


def test_last_k_are_the_highest_steps_and_skip_incomplete_ones(run_dir, caplog):
    (run_dir / "checkpoint-200").mkdir()  # a run stopped while saving: no weights, no trainer_state.json
    assert last_checkpoints(str(run_dir), 2) == [str(run_dir / "checkpoint-100"), str(run_dir / "checkpoint-20")]
    assert "Skipping checkpoint" in caplog.text and "checkpoint-200" in caplog.text
    averaged = average_last_checkpoints(str(run_dir), 3)
    expected = expected_mean([run_dir / f"checkpoint-{step}" for step in (10, 20, 100)])
    for name, tensor in expected.items():
        torch.testing.assert_close(averaged[name], tensor, rtol=0, atol=1e-7)


def test_averaged_model_loads_ties_and_generates(run_dir, tmp_path):
    checkpoints = [str(run_dir / "checkpoint-10"), str(run_dir / "checkpoint-20")]
    output_dir = tmp_path / "averaged"
    save_averaged_model(checkpoints, str(output_dir))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "modeling_gru_attn.py", "configuration_gru_attn.py"} <= {path.name for path in output_dir.iterdir()}
    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir).eval()
    expected = expected_mean([Path(path) for path in checkpoints])
    embeddings = expected["model.encoder.embed_tokens.weight"]
    torch.testing.assert_close(model.lm_head.weight, embeddings, rtol=0, atol=1e-7)  # tied to the averaged source
    assert model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(model.readout.weight, expected["readout.weight"], rtol=0, atol=1e-7)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(["the cat sat", "a dog"], return_tensors="pt", padding=True)
    output = model.generate(**batch, max_new_tokens=5, num_beams=2)
    assert output.shape[0] == 2 and 1 < output.shape[1] <= 6


def test_load_averaged_weights_restores_the_ties():
    model = GruAttnForConditionalGeneration(tiny_config())
    averaged = {name: torch.full_like(tensor, 0.5) for name, tensor in model.state_dict().items()
                if name != "lm_head.weight"}
    load_averaged_weights(model, averaged)
    assert torch.equal(model.lm_head.weight, torch.full_like(model.lm_head.weight, 0.5))
    with pytest.raises(ValueError, match=r"missing \['readout.weight'\]"):
        load_averaged_weights(model, {k: v for k, v in averaged.items() if k != "readout.weight"})


def test_integer_buffers_must_be_equal(tmp_path):
    config = tiny_config()
    for step, count in ((1, 3), (2, 3), (3, 4)):
        folder = tmp_path / f"checkpoint-{step}"
        config.save_pretrained(folder)
        weights = {"w": torch.full((2,), float(step)), "count": torch.tensor([count])}
        save_file(weights, str(folder / "model.safetensors"))
    averaged = average_checkpoints([str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-2")])
    assert torch.equal(averaged["w"], torch.full((2,), 1.5)) and torch.equal(averaged["count"], torch.tensor([3]))
    with pytest.raises(ValueError, match="Non-float tensor 'count' .* differs"):
        average_checkpoints([str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-3")])


def test_bfloat16_weights_are_averaged_in_float_and_stay_bfloat16(tmp_path):
    values = [1.0, 1.0078125, 1.0078125]  # bf16 steps of 1/128 near 1: a bf16 running sum would round the mean
    for step, value in enumerate(values):
        folder = tmp_path / f"checkpoint-{step}"
        tiny_config().save_pretrained(folder)
        save_file({"w": torch.tensor([value], dtype=torch.bfloat16)}, str(folder / "model.safetensors"))
    averaged = average_checkpoints([str(tmp_path / f"checkpoint-{step}") for step in range(3)])
    assert averaged["w"].dtype == torch.bfloat16
    assert averaged["w"].item() == torch.tensor(sum(values) / 3).to(torch.bfloat16).item()


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda run: write_checkpoint(run, 2, tiny_config(hidden_size=24)),
         "different architectures, .*'hidden_size': 16 vs 24"),
        (lambda run: write_checkpoint(run, 2, tiny_config(attention_type="dot")),
         "'attention_type': 'additive' vs 'dot'"),
        (lambda run: (run / "checkpoint-2").mkdir(), "has no readable config.json"),
        (lambda run: (write_checkpoint(run, 2, tiny_config()) / "model.safetensors").write_bytes(b"garbage"),
         "has no readable safetensors weights"),
    ],
    ids=["other-size", "other-attention", "missing-checkpoint", "corrupt-weights"],
)
def test_bad_checkpoints_are_clear_errors(tmp_path, break_it, message):
    write_checkpoint(tmp_path, 1, tiny_config())
    break_it(tmp_path)
    with pytest.raises(ValueError, match=message):
        average_checkpoints([str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-2")])


def test_other_parameter_names_or_shapes_are_clear_errors(tmp_path):
    for step, weights in ((1, {"a": torch.zeros(2)}), (2, {"b": torch.zeros(2)}), (3, {"a": torch.zeros(3)})):
        folder = tmp_path / f"checkpoint-{step}"
        tiny_config().save_pretrained(folder)
        save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"different weights: only in the first \['a'\], only in the second \['b'\]"):
        average_checkpoints([str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-2")])
    with pytest.raises(ValueError, match=r"Weight 'a' is torch.float32 of shape \(2,\) in .* of shape \(3,\)"):
        average_checkpoints([str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-3")])


@pytest.mark.parametrize(
    "k, message",
    [(5, "has only 4 complete checkpoint-<step> folders"), (0, "at least 1, got 0"), (-2, "at least 1, got -2")],
)
def test_bad_k_is_a_clear_error(run_dir, k, message):
    with pytest.raises(ValueError, match=message):
        last_checkpoints(str(run_dir), k)


def test_different_tokenizers_are_a_clear_error(run_dir, tmp_path):
    other = train_tokenizer(iter(CORPUS[::-1] + ["ganz andere worte"]), vocab_size=60)
    other.save_pretrained(run_dir / "checkpoint-10")
    with pytest.raises(ValueError, match="have different tokenizers"):
        save_averaged_model([str(run_dir / "checkpoint-5"), str(run_dir / "checkpoint-10")], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_no_checkpoint_or_no_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="at least one checkpoint"):
        average_checkpoints([])
    with pytest.raises(ValueError, match="is not a folder"):
        last_checkpoints(str(tmp_path / "missing"), 2)


def run_script(*args: str):
    argv = sys.argv
    sys.argv = [str(SCRIPT), *args]
    try:
        runpy.run_path(str(SCRIPT), run_name="average_checkpoints_under_test")["main"]()
    finally:
        sys.argv = argv


def test_script_averages_the_last_k_and_refuses_to_overwrite(run_dir, tmp_path):
    output_dir = tmp_path / "averaged"
    run_script("--inputs", str(run_dir), "--last", "2", "--output_dir", str(output_dir))
    stored = load_file(str(output_dir / "model.safetensors"))
    expected = expected_mean([run_dir / "checkpoint-20", run_dir / "checkpoint-100"])
    for name, tensor in expected.items():
        torch.testing.assert_close(stored[name], tensor, rtol=0, atol=1e-7)

    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    with pytest.raises(ValueError, match="is not empty; pass --overwrite_output_dir"):
        run_script("--inputs", str(run_dir), "--last", "3", "--output_dir", str(output_dir))
    assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before
    run_script("--inputs", str(run_dir / "checkpoint-5"), str(run_dir / "checkpoint-10"),
               "--output_dir", str(output_dir), "--overwrite_output_dir")
    stored = load_file(str(output_dir / "model.safetensors"))
    torch.testing.assert_close(stored["readout.weight"], expected_mean(
        [run_dir / "checkpoint-5", run_dir / "checkpoint-10"])["readout.weight"], rtol=0, atol=1e-7)


def test_script_refuses_a_checkpoint_as_output_and_several_inputs_with_last(run_dir):
    checkpoint = str(run_dir / "checkpoint-5")
    with pytest.raises(ValueError, match="is one of the checkpoints to average"):
        run_script("--inputs", checkpoint, str(run_dir / "checkpoint-10"), "--output_dir", checkpoint,
                   "--overwrite_output_dir")
    with pytest.raises(ValueError, match="--last takes one training output folder"):
        run_script("--inputs", checkpoint, checkpoint, "--last", "1", "--output_dir", str(run_dir / "out"))


def test_script_on_the_checkpoints_of_a_tiny_training_run(train_script, tmp_path):
    from test_train_script import TINY

    run_dir = tmp_path / "run"
    train_script.main(["--output_dir", str(run_dir), *TINY, "--num_train_epochs", "2", "--save_total_limit", "3"])
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert len(checkpoints) == 2
    output_dir = tmp_path / "averaged"
    run_script("--inputs", str(run_dir), "--last", "2", "--output_dir", str(output_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir).eval()
    for name, tensor in expected_mean(checkpoints).items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=1e-7)
    assert model.lm_head.weight.data_ptr() == model.model.encoder.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert (output_dir / "tokenizer.json").read_text() == (run_dir / "tokenizer.json").read_text()
    output = model.generate(**tokenizer(["Zwei Hunde spielen."], return_tensors="pt"), max_new_tokens=5)
    assert output.shape[0] == 1


def test_train_script_keeps_the_average_only_when_it_validates_better(train_script, tmp_path):
    from test_train_script import TINY

    run_dir = tmp_path / "run"
    train_script.main(["--output_dir", str(run_dir), *TINY, "--num_train_epochs", "3", "--save_total_limit", "3",
                       "--average_last_checkpoints", "2", "--learning_rate", "0.02"])
    results = json.loads((run_dir / "all_results.json").read_text())
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert results["eval_best_bleu"] == state["best_metric"]
    saved = AutoModelForSeq2SeqLM.from_pretrained(run_dir).state_dict()
    if results["eval_averaged_bleu"] > results["eval_best_bleu"]:
        assert results["checkpoints_averaged"] == 2
        expected = expected_mean(checkpoints[-2:])
    else:
        assert results["checkpoints_averaged"] == 0
        expected = expected_mean([Path(state["best_model_checkpoint"])])
    for name, tensor in expected.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=1e-7)
