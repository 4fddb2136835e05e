"""Tests for `hf_gru_attn.translation` and the `scripts/translate.py` / `scripts/evaluate.py` command lines.

The scripts run on a tiny random model saved in a temp folder, as subprocesses (the file modes) or in this process
(stdin mode, error paths), and their output is compared with the library run sentence by sentence: a random model
still maps different inputs to different outputs, so any mix-up of the length sorting or the batching shows up as a
changed line.
"""

import functools
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch

import hf_gru_attn
from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.decoding_dtype import choose_decoding_dtype, decoding_step_shapes
from hf_gru_attn.tokenization import train_tokenizer
from hf_gru_attn.translation import (
    attention_alignment,
    load_translation_model,
    read_lines,
    split_lines,
    translate,
)


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "das ist ein kleiner test",
    "wir gehen heute nach hause",
]
# Lengths deliberately unsorted, an empty and a whitespace-only line, and characters the tokenizer never saw.
SOURCES = ["the cat", "", "a dog ran in the park and the cat sat on the mat", "   ", "das ist naïve 猫", "wir"]
GENERATE_KWARGS = {"max_new_tokens": 6}


def tiny_model_and_tokenizer():
    """A seeded random `GruAttnForConditionalGeneration` (embedding 16, hidden 32) and a 60-token BPE tokenizer."""
    tokenizer = train_tokenizer(iter(CORPUS), vocab_size=60)
    torch.manual_seed(0)
    config = GruAttnConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32)
    return GruAttnForConditionalGeneration(config).eval(), tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tokenizer = tiny_model_and_tokenizer()
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_translation_model(model_dir, device="cpu")


def run_script(name, *args, stdin=None):
    """Run `scripts/<name>` in a fresh interpreter that imports the same `hf_gru_attn` as this test process."""
    env = dict(os.environ, PYTHONPATH=str(Path(hf_gru_attn.__file__).resolve().parent.parent), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )


def one_by_one(model, tokenizer, texts, **generate_kwargs):
    return [translate(model, tokenizer, [text], batch_size=1, **generate_kwargs)[0] for text in texts]


def test_split_and_read_lines_handle_crlf_bom_and_unicode_separators(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffa b\r\n\r\nc\u2028d\x0ce\rf\n".encode())
    assert read_lines(path) == ["a b", "", "c\u2028d\x0ce", "f"]
    assert split_lines("x\ny") == split_lines("x\ny\n") == ["x", "y"]
    assert split_lines("") == []


def test_translate_keeps_input_order_and_empty_lines(loaded):
    model, tokenizer = loaded
    batched = translate(model, tokenizer, SOURCES, batch_size=2, **GENERATE_KWARGS)
    assert batched == one_by_one(model, tokenizer, SOURCES, **GENERATE_KWARGS)
    assert batched[1] == batched[3] == ""
    nonempty = [batched[i] for i in (0, 2, 4, 5)]
    assert all(nonempty) and len(set(nonempty)) > 1  # otherwise an order mix-up could not be seen
    assert translate(model, tokenizer, [], **GENERATE_KWARGS) == []


def test_translate_rejects_bad_arguments(loaded):
    model, tokenizer = loaded
    with pytest.raises(ValueError, match="batch_size"):
        translate(model, tokenizer, ["the cat"], batch_size=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        translate(model, tokenizer, ["the cat"], num_beams=2, num_return_sequences=2)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_attention_alignment_shapes_and_rows(loaded, num_beams):
    model, tokenizer = loaded
    text = "a dog ran in the park"
    alignment = attention_alignment(model, tokenizer, text, num_beams=num_beams, **GENERATE_KWARGS)
    assert alignment.source_tokens == tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert alignment.weights.shape == (len(alignment.target_tokens), len(alignment.source_tokens))
    np.testing.assert_allclose(alignment.weights.sum(axis=1), 1.0, atol=1e-5)
    # The weights along the chosen hypothesis (the right beam at every step) equal a teacher-forced forward pass.
    target_ids = tokenizer.convert_tokens_to_ids(alignment.target_tokens)
    decoder_input_ids = torch.tensor([[model.config.decoder_start_token_id, *target_ids[:-1]]])
    with torch.no_grad():
        forward = model(
            **tokenizer([text], return_tensors="pt"), decoder_input_ids=decoder_input_ids, output_attentions=True
        )
    np.testing.assert_allclose(alignment.weights, forward.cross_attentions[-1][0].mean(dim=0).numpy(), atol=1e-5)
    assert alignment.translation == translate(model, tokenizer, [text], num_beams=num_beams, **GENERATE_KWARGS)[0]
    with pytest.raises(ValueError, match="empty"):
        attention_alignment(model, tokenizer, "  ")


def test_translate_script_files_beam_search_and_attention_plot(model_dir, loaded, tmp_path):
    model, tokenizer = loaded
    input_file, output_file, png = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "attention.png"
    input_file.write_bytes("\r\n".join(SOURCES).encode("utf-8"))  # no final newline
    result = run_script(
        "translate.py", "--model", model_dir, "--input_file", input_file, "--output_file", output_file,
        "--num_beams", 3, "--batch_size", 4, "--max_new_tokens", 6, "--plot_attention", png,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert "sentence" in result.stderr.decode()  # the tqdm bar goes to stderr
    expected = one_by_one(model, tokenizer, SOURCES, num_beams=3, **GENERATE_KWARGS)
    assert output_file.read_text(encoding="utf-8").split("\n") == [*expected, ""]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_evaluate_script_reports_sacrebleu_of_its_hypotheses(model_dir, loaded, tmp_path):
    sources, references = tmp_path / "src.txt", tmp_path / "ref.txt"
    hypotheses_file = tmp_path / "hyp.txt"
    sources.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    references.write_text("the cat\n\nthe dog in the park\n\nwir gehen\nwir\n", encoding="utf-8")
    result = run_script(
        "evaluate.py", "--model", model_dir, "--source_file", sources, "--reference_file", references,
        "--max_new_tokens", 6, "--batch_size", 2, "--output_file", hypotheses_file,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert set(report) == {"bleu", "chrf", "bleu_signature", "chrf_signature", "num_sentences", "dtype"}
    hypotheses = read_lines(hypotheses_file)
    refs = read_lines(references)
    assert report["num_sentences"] == len(hypotheses) == len(SOURCES)
    assert report["dtype"] == "float32"
    assert hypotheses == one_by_one(*loaded, SOURCES, **GENERATE_KWARGS)
    assert report["bleu"] == sacrebleu.corpus_bleu(hypotheses, [refs]).score
    assert report["chrf"] == sacrebleu.corpus_chrf(hypotheses, [refs]).score
    assert report["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_translate_script_runs_in_bfloat16(monkeypatch, capsysbinary, model_dir, loaded):
    # --dtype bfloat16 loads the weights in bf16, so generate() computes in it: the translations equal those of the
    # fp32 model cast to bf16 by hand.
    model, tokenizer = loaded
    cast = GruAttnForConditionalGeneration.from_pretrained(model_dir).to(torch.bfloat16).eval()
    used = []

    def spy(*args, **kwargs):
        used.append(load_translation_model(*args, **kwargs))
        return used[-1]

    monkeypatch.setattr(hf_gru_attn.translation, "load_translation_model", spy, raising=True)
    run_main_in_process(
        monkeypatch, "translate.py", "--model", model_dir, "--dtype", "bfloat16", "--max_new_tokens", 6,
        stdin="\n".join(SOURCES).encode("utf-8"),
    )  # fmt: skip
    stdout = capsysbinary.readouterr().out.decode("utf-8")
    assert [m.dtype for m, _ in used] == [torch.bfloat16]
    assert stdout.split("\n") == [*one_by_one(cast, tokenizer, SOURCES, **GENERATE_KWARGS), ""]


@pytest.mark.parametrize(("bfloat16_ms", "expected"), [(1.0, torch.bfloat16), (70.0, torch.float32)])
def test_translate_script_dtype_auto_loads_the_measured_dtype(
    monkeypatch, capsysbinary, tmp_path, model_dir, loaded, bfloat16_ms, expected
):
    model, tokenizer = loaded
    measured = []

    def measure(shapes, device):
        measured.append(shapes)
        return {"float32_ms": 10.0, "bfloat16_ms": bfloat16_ms}

    choose = functools.partial(choose_decoding_dtype, cache_file=tmp_path / "dtype.json", measure=measure)
    monkeypatch.setattr(hf_gru_attn.translation, "choose_decoding_dtype", choose)
    used = []

    def spy(*args, **kwargs):
        used.append(load_translation_model(*args, **kwargs))
        return used[-1]

    monkeypatch.setattr(hf_gru_attn.translation, "load_translation_model", spy, raising=True)
    for _ in range(2):
        run_main_in_process(
            monkeypatch, "translate.py", "--model", model_dir, "--dtype", "auto", "--max_new_tokens", 6,
            "--batch_size", 4, "--num_beams", 2, stdin="\n".join(SOURCES).encode("utf-8"),
        )  # fmt: skip
    assert [m.dtype for m, _ in used] == [expected, expected]
    assert measured == [decoding_step_shapes(model.config, 4 * 2)]  # measured once, at batch x beams rows
    stdout = capsysbinary.readouterr().out.decode("utf-8")
    cast = GruAttnForConditionalGeneration.from_pretrained(model_dir).to(expected).eval()
    assert stdout.split("\n") == 2 * one_by_one(cast, tokenizer, SOURCES, max_new_tokens=6, num_beams=2) + [""]


def run_main_in_process(monkeypatch, script, *args, stdin=b""):
    """Run a script as `__main__` in this process (no interpreter start-up), with `sys.argv` and stdin set."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # evaluate.py edits sys.path
    runpy.run_path(str(SCRIPTS / script), run_name="__main__")


def test_translate_script_stdin_to_stdout(monkeypatch, capsysbinary, model_dir, loaded):
    stdin = "\r\n".join(SOURCES).encode("utf-8") + b"\r\n"
    run_main_in_process(
        monkeypatch, "translate.py", "--model", model_dir, "--batch_size", 2, "--max_new_tokens", 6, stdin=stdin
    )
    stdout = capsysbinary.readouterr().out.decode("utf-8")
    assert stdout.split("\n") == [*one_by_one(*loaded, SOURCES, **GENERATE_KWARGS), ""]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("translate.py", ["--model", "{tmp}/no_such_model"], "Model folder '{tmp}/no_such_model' does not exist"),
        ("translate.py", ["--model", "{tmp}"], "has no config.json"),
        ("translate.py", ["--model", "{model}", "--input_file", "{tmp}/missing.txt"], "'{tmp}/missing.txt' does not"),
        ("translate.py", ["--model", "{model}", "--batch_size", "0"], "--batch_size must be at least 1"),
        ("translate.py", ["--model", "{model}", "--dtype", "int8"], "invalid choice: 'int8'"),
        ("translate.py", ["--model", "{model}", "--output_file", "{tmp}/no/out.txt"], "does not exist; create it"),
        ("evaluate.py", ["--model", "{model}", "--source_file", "{src}", "--reference_file", "{tmp}/x"], "does not"),
        ("evaluate.py", ["--model", "{model}", "--source_file", "{src}", "--reference_file", "{ref}"], "line-aligned"),
        ("translate.py", ["--model", "{model}", "--input_file", "{src}", "--output_file", "{tmp}/../{dir}/src.txt"],
         "is the --input_file file"),
        ("evaluate.py", ["--model", "{model}", "--source_file", "{src}", "--reference_file", "{ref}", "--output_file",
                         "{ref}"], "is the --reference_file file"),
    ],
)
def test_scripts_fail_with_a_clear_message(monkeypatch, capsys, tmp_path, model_dir, script, args, message):
    (tmp_path / "src.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("a\n", encoding="utf-8")
    fill = {"tmp": tmp_path, "model": model_dir, "src": tmp_path / "src.txt", "ref": tmp_path / "ref.txt",
            "dir": tmp_path.name}
    with pytest.raises(SystemExit) as exit_info:
        run_main_in_process(monkeypatch, script, *(arg.format(**fill) for arg in args))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert message.format(**fill) in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "src.txt").read_text(encoding="utf-8") == "a\nb\n"  # inputs untouched
    assert (tmp_path / "ref.txt").read_text(encoding="utf-8") == "a\n"
