"""`scripts/train.py`: the quick preset end to end on a slice of the bundled Multi30k, fine-tuning, argument handling.

Every bad-input case must fail before any training starts: no checkpoint folder is written.
"""

import json
from pathlib import Path

import pytest
import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import hf_gru_attn  # noqa: F401  (registers the Auto classes)
from hf_gru_attn.data import BUNDLED_MULTI30K_DIR


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# The quick preset shrunk to seconds: a slice of the bundled corpus, a tiny model and vocabulary, one epoch.
TINY = [
    "--preset", "quick", "--max_train_samples", "48", "--max_eval_samples", "8", "--max_predict_samples", "8",
    "--num_train_epochs", "1", "--embedding_size", "16", "--hidden_size", "32", "--vocab_size", "300",
    "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "8", "--generation_max_length", "12",
    "--num_beams", "2", "--logging_steps", "1", "--disable_tqdm", "true",
]


@pytest.fixture(scope="module")
def quick_run(train_script, tmp_path_factory):
    """Output folder of one tiny quick-preset run on the bundled data."""
    output_dir = tmp_path_factory.mktemp("quick") / "model"
    train_script.main(["--output_dir", str(output_dir), *TINY])
    return output_dir


def read_lines(path: Path, limit: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:limit]


def test_quick_preset_writes_a_complete_model_folder(quick_run):
    names = {path.name for path in quick_run.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md",
                "modeling_gru_attn.py", "configuration_gru_attn.py", "all_results.json", "test_predictions.txt",
                "learning_curve.png"}
    assert expected <= names
    assert "pytorch_model.bin" not in names  # weights are safetensors only (training_args.bin is the Trainer's)
    config = json.loads((quick_run / "config.json").read_text())
    assert config["model_type"] == "gru_attn" and config["embedding_size"] == 16 and config["hidden_size"] == 32
    assert json.loads((quick_run / "generation_config.json").read_text())["num_beams"] == 2
    card = (quick_run / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "model-index" in card
    assert "- multi30k" in card and "| Multi30k test2016 (Flickr) | test | sacreBLEU |" in card


def test_test_metrics_are_sacrebleu_on_the_written_predictions(quick_run):
    results = json.loads((quick_run / "all_results.json").read_text())
    hypotheses = read_lines(quick_run / "test_predictions.txt", 8)
    references = read_lines(BUNDLED_MULTI30K_DIR / "test2016.en", 8)
    assert results["test_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert results["test_chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert results["test_bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert results["test_num_beams"] == 2 and results["train_wall_clock_minutes"] > 0
    assert results["test_num_sentences"] == len(hypotheses) == 8
    assert "beam search with 2 beams, on 8 test sentences:" in (quick_run / "README.md").read_text()


def test_saved_model_reloads_and_translates_as_the_predictions_say(quick_run):
    tokenizer = AutoTokenizer.from_pretrained(quick_run)
    model = AutoModelForSeq2SeqLM.from_pretrained(quick_run).eval()
    sources = read_lines(BUNDLED_MULTI30K_DIR / "test2016.de", 2)
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**batch, num_beams=2, max_length=12)
    predictions = read_lines(quick_run / "test_predictions.txt", 2)
    assert tokenizer.batch_decode(output, skip_special_tokens=True) == predictions


def test_fine_tuning_keeps_the_tokenizer(train_script, quick_run, tmp_path):
    data = tmp_path / "pairs.jsonl"
    pairs = [{"translation": {"de": f"ein hund {i}", "en": f"a dog {i}"}} for i in range(64)]
    data.write_text("\n".join(json.dumps(pair) for pair in pairs) + "\n", encoding="utf-8")
    output_dir = tmp_path / "tuned"
    train_script.main([
        "--output_dir", str(output_dir), "--model_name_or_path", str(quick_run), "--train_file", str(data),
        "--validation_file", str(data), *TINY,
    ])
    assert (output_dir / "tokenizer.json").read_text() == (quick_run / "tokenizer.json").read_text()
    card = (output_dir / "README.md").read_text()  # names the data it was trained on, not the bundled Multi30k
    assert f"- training: `{data}`" in card and "multi30k" not in card.lower()
    before = AutoModelForSeq2SeqLM.from_pretrained(quick_run).state_dict()
    after = AutoModelForSeq2SeqLM.from_pretrained(output_dir).state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_arguments_from_a_json_file(train_script, tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "preset": "quick", "num_train_epochs": 3}))
    model_args, data_args, training_args, recipe_args = train_script.parse_arguments([str(args)])
    assert training_args.num_train_epochs == 3 and recipe_args.preset == "quick"
    assert model_args.hidden_size == 256  # from the quick preset


def test_user_flags_override_the_preset(train_script, tmp_path):
    model_args, _, training_args, _ = train_script.parse_arguments(
        ["--output_dir", str(tmp_path), "--hidden_size", "48", "--learning_rate", "0.01"]
    )
    assert model_args.hidden_size == 48 and training_args.learning_rate == 0.01
    assert training_args.predict_with_generate and training_args.metric_for_best_model == "bleu"


@pytest.mark.parametrize(
    "extra, error, message",
    [
        (["--no_such_flag", "1"], SystemExit, "unknown arguments: --no_such_flag"),
        (["--preset", "huge"], SystemExit, "--preset must be one of"),
        (["--train_file", "/nonexistent/train.jsonl"], FileNotFoundError, "/nonexistent/train.jsonl"),
        (["--source_lang", "fr"], ValueError, "fr"),
        (["--model_name_or_path", "/nonexistent/model"], ValueError, "Cannot load '/nonexistent/model'"),
        (["--tokenizer_name", "no_such_folder"], ValueError, "Pass the output_dir of an earlier train.py run"),
    ],
    ids=["unknown-flag", "unknown-preset", "missing-data-file", "language-not-in-data", "missing-model",
         "missing-tokenizer"],
)
def test_bad_arguments_fail_before_training(train_script, tmp_path, capsys, extra, error, message):
    output_dir = tmp_path / "out"
    with pytest.raises(error) as caught:
        train_script.main(["--output_dir", str(output_dir), *TINY, *extra])
    assert message in str(caught.value) + capsys.readouterr().err
    assert not list(output_dir.glob("checkpoint-*"))


def test_output_dir_holding_a_model_is_not_overwritten(train_script, quick_run, tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    for name in ("config.json", "all_results.json", "model.safetensors"):
        (folder / name).write_bytes((quick_run / name).read_bytes())
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        train_script.main(["--output_dir", str(folder), *TINY])
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


@pytest.mark.parametrize(("measured", "expected"), [(torch.bfloat16, True), (torch.float32, False)])
def test_bf16_auto_trains_in_bf16_only_where_it_measures_faster(train_script, tmp_path, monkeypatch, measured,
                                                                expected):
    calls = []

    def fake_choice(config, device, rows):
        calls.append((config.hidden_size, config.vocab_size, device, rows))
        return measured

    monkeypatch.setattr(train_script, "choose_decoding_dtype", fake_choice)
    flags = ["--output_dir", str(tmp_path), "--hidden_size", "64", "--per_device_train_batch_size", "8"]
    training_args = train_script.parse_arguments(flags + ["--bf16", "auto"])[2]
    assert training_args.bf16 is expected and calls == [(64, 8000, "cpu", 8)]
    assert train_script.parse_arguments(flags + ["--bf16", "false"])[2].bf16 is False  # given values are kept
    assert train_script.parse_arguments(flags + ["--bf16", "true"])[2].bf16 is True
    assert len(calls) == 1


def test_use_shortlist_saves_the_table_and_decodes_the_test_set_with_it(train_script, tmp_path):
    output_dir = tmp_path / "model"
    train_script.main(["--output_dir", str(output_dir), *TINY, "--use_shortlist", "true"])
    assert (output_dir / "shortlist.safetensors").is_file()
    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert model.config.use_shortlist and model.shortlist is not None
    sources = read_lines(BUNDLED_MULTI30K_DIR / "test2016.de", 8)
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**batch, num_beams=2, max_length=12)
    hypotheses = tokenizer.batch_decode(output, skip_special_tokens=True)
    assert hypotheses == read_lines(output_dir / "test_predictions.txt", 8)
    candidates = model.shortlist.candidate_ids(batch["input_ids"], batch["attention_mask"])
    assert torch.isin(output[:, 1:], torch.cat([candidates, torch.tensor([0, 1, 2])])).all()
