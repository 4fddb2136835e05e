"""Real-world bad input: each case gives a clear error (exit status 2 and a one-line message, no traceback) or a
documented behaviour, never a traceback from inside torch and never a shifted output line.

Documented behaviours of `scripts/translate.py` (tested here):

- one output line per input line, in input order; input lines end with LF, CRLF or CR (a UTF-8 BOM is skipped),
  output lines end with LF;
- empty and whitespace-only lines give empty output lines (they are not sent to the model);
- control characters, emoji and scripts the tokenizer never saw are translated like any other text (unknown
  characters become `<unk>`); form feeds, `\\u2028` and other Unicode line separators do not end an input line, and
  no such character can appear in an output line;
- a sentence longer than the model's `max_source_positions` (training's `--max_source_length`) is truncated to that
  many tokens, keeping the final `</s>` as training does, with a warning naming its line;
- input that is not valid UTF-8 is an error naming the line and column of the first bad byte.

Loading fails with a message naming the problem for a tokenizer that does not belong to the model, a truncated or
garbled `model.safetensors`, weights that lack tensors, and a `config.json` with an unknown `attention_type` or a
negative size. `scripts/train.py` refuses an empty training file before training.
"""

import io
import json
import logging
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.tokenization import train_tokenizer


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
CORPUS = ["the cat sat on the mat", "a dog ran in the park", "das ist ein kleiner test", "wir gehen heute nach hause"]
MAX_SOURCE_POSITIONS = 20
GENERATE_KWARGS = {"max_new_tokens": 5, "num_beams": 1}
LONG_LINE = ("the cat sat on the mat " * 220)[:5000]
INPUT_LINES = [
    "the cat",
    "",
    "   \t ",
    LONG_LINE,
    "a\x00b\x07c\x1b[31m d\x0ce\u2028f\x85g\x0bh\x1ci",  # NUL, bell, ANSI escape, form feed, Unicode line breaks
    "der 🐱 кот 猫 قطة the cat 👩‍👩‍👧",  # emoji (with ZWJ), Cyrillic, CJK, Arabic (right-to-left), Latin
    "a dog ran",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random model (max_source_positions=20) and its 60-token tokenizer, saved together."""
    tokenizer = train_tokenizer(iter(CORPUS), vocab_size=60)
    torch.manual_seed(0)
    config = GruAttnConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, max_source_positions=MAX_SOURCE_POSITIONS
    )
    path = tmp_path_factory.mktemp("tiny_model")
    GruAttnForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A copy of the tiny model folder that a test may damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def run_translate(monkeypatch, *args, stdin: bytes = b""):
    """Runs scripts/translate.py as `__main__` in this process with `sys.argv` and binary stdin set."""
    monkeypatch.setattr(sys, "argv", ["translate.py", *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    runpy.run_path(str(SCRIPTS / "translate.py"), run_name="__main__")


def expect_usage_error(monkeypatch, capsys, *args, stdin: bytes = b"") -> str:
    """Runs translate.py expecting exit status 2 without a traceback; returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run_translate(monkeypatch, *args, stdin=stdin)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    assert "Traceback" not in stderr
    return stderr


def reference_translation(model, tokenizer, text: str) -> str:
    """One sentence through `generate` directly: stripped, tokenized with training's truncation, greedy."""
    if not text.strip():
        return ""
    ids = tokenizer(text.strip(), truncation=True, max_length=MAX_SOURCE_POSITIONS)["input_ids"]
    with torch.no_grad():
        output = model.generate(torch.tensor([ids]), **GENERATE_KWARGS)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def test_awkward_lines_keep_one_output_line_each_in_order(monkeypatch, caplog, model_dir, tmp_path):
    source = tmp_path / "in.txt"
    # CRLF line ends, a BOM, and a last line without a line end.
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(INPUT_LINES).encode("utf-8"))
    output = tmp_path / "out.txt"
    with caplog.at_level(logging.WARNING):
        run_translate(monkeypatch, "--model", model_dir, "--input_file", source, "--output_file", output,
                      "--batch_size", 3, "--max_new_tokens", 5, "--num_beams", 1)

    text = output.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert len(lines) == len(INPUT_LINES)
    assert lines == text.splitlines()  # no Unicode line break inside an output line

    model = GruAttnForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    assert lines == [reference_translation(model, tokenizer, line) for line in INPUT_LINES]
    assert lines[1] == lines[2] == ""
    assert len(tokenizer(LONG_LINE)["input_ids"]) > 1000  # really truncated, to 20 tokens ending with </s>:
    truncated = tokenizer(LONG_LINE, truncation=True, max_length=MAX_SOURCE_POSITIONS)["input_ids"]
    assert len(truncated) == MAX_SOURCE_POSITIONS and truncated[-1] == tokenizer.eos_token_id
    warnings = [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()]
    assert warnings == [
        f"1 source sentence(s) longer than {MAX_SOURCE_POSITIONS} tokens, the most this model takes, were "
        "truncated to 20 tokens: input line(s) 4."
    ]


def test_a_lone_cr_ends_a_line_and_stdin_works_the_same(monkeypatch, capsysbinary, model_dir):
    run_translate(monkeypatch, "--model", model_dir, "--max_new_tokens", 5, "--num_beams", 1,
                  stdin=b"the cat\rthe dog\r\n\na dog ran")
    lines = capsysbinary.readouterr().out.decode("utf-8").split("\n")
    assert len(lines) == 5 and lines[2] == "" and lines[4] == ""  # 4 lines, each ended by LF


@pytest.mark.parametrize(
    ("data", "line", "column", "byte"),
    [
        (b"the cat\nthe \xffdog\n", 2, 5, "0xff"),  # invalid start byte
        (b"\xef\xbb\xbfok\r\nok\r\n\xe4\xbd\n", 3, 1, "0xe4"),  # truncated 3-byte sequence, after a BOM and CRLF
        (b"caf\xe9\n", 1, 4, "0xe9"),  # Latin-1 text
    ],
)
def test_invalid_utf8_names_line_and_column(monkeypatch, capsys, model_dir, tmp_path, data, line, column, byte):
    source = tmp_path / "in.txt"
    source.write_bytes(data)
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_dir, "--input_file", source)
    assert f"{source}:{line}: not valid UTF-8 (byte {byte} at column {column}:" in stderr
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_dir, stdin=data)
    assert f"<stdin>:{line}: not valid UTF-8 (byte {byte} at column {column}:" in stderr


def test_tokenizer_with_more_tokens_than_the_model_is_refused(monkeypatch, capsys, model_copy):
    bigger = train_tokenizer(iter(CORPUS + ["völlig andere wörter hier", "quite different words too"]), 100)
    assert len(bigger) > 60
    bigger.save_pretrained(model_copy)
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_copy)
    assert f"The tokenizer in '{model_copy}' has {len(bigger)} tokens but the model's vocabulary has 60" in stderr


def test_tokenizer_with_other_special_ids_is_refused(monkeypatch, capsys, model_copy):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_copy)
    tokenizer.pad_token = "<unk>"  # id 3, the model pads with 0
    tokenizer.save_pretrained(model_copy)
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_copy)
    assert "has pad_token_id=3 but the model's config has 0" in stderr


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_weights_file_is_a_clear_error(monkeypatch, capsys, model_copy, damage):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) * 2 // 3], "garbage": b"\x93" * 4096, "empty": b""}[damage])
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_copy)
    assert f"Cannot load the model weights in '{model_copy}'" in stderr
    assert "damaged or incomplete" in stderr


def test_weights_lacking_a_tensor_are_a_clear_error(monkeypatch, capsys, model_copy):
    weights = load_file(model_copy / "model.safetensors")
    del weights["model.decoder.bridge.weight"]
    save_file(weights, str(model_copy / "model.safetensors"), metadata={"format": "pt"})
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_copy)
    assert "lack ['model.decoder.bridge.weight']" in stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attention_type", "multihead", "GruAttnConfig.attention_type must be one of ('additive', 'dot', 'general')"),
        ("hidden_size", -32, "GruAttnConfig.hidden_size must be a positive integer, got -32"),
        ("vocab_size", -5, "GruAttnConfig.vocab_size must be a positive integer, got -5"),
        ("embedding_size", 0, "GruAttnConfig.embedding_size must be a positive integer, got 0"),
    ],
)
def test_invalid_config_json_names_the_field(monkeypatch, capsys, model_copy, field, value, message):
    config = json.loads((model_copy / "config.json").read_text())
    config[field] = value
    (model_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    stderr = expect_usage_error(monkeypatch, capsys, "--model", model_copy)
    assert message in stderr


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_training_file_is_refused_before_training(train_script, tmp_path, content):
    for lang in ("de", "en"):
        (tmp_path / f"train.{lang}").write_text(content, encoding="utf-8")
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="has no sentence pair with both sides non-empty"):
        train_script.main(["--preset", "quick", "--train_file", str(tmp_path / "train"), "--output_dir",
                           str(output_dir), "--report_to", "none"])
    assert not output_dir.exists() or not any(output_dir.glob("checkpoint-*"))


PEAK_RSS = '''
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
'''


@pytest.mark.slow
def test_translate_script_memory_stays_flat_on_100k_lines(model_dir, tmp_path):
    """Peak RSS of translate.py on 100,000 short lines may exceed that on 1,000 lines by at most 60 MB.

    Measured before translate.py streamed in chunks: +287 MB (430 MB -> 717 MB), about 2.9 kB per line; after: +11 MB.
    """
    import os
    import random
    import subprocess

    import hf_gru_attn

    wrapper = tmp_path / "peak_rss.py"
    wrapper.write_text(PEAK_RSS, encoding="utf-8")
    words = " ".join(CORPUS).split()
    rng = random.Random(0)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(hf_gru_attn.__file__).resolve().parent.parent))
    peaks = {}
    for num_lines in (1_000, 100_000):
        source, output = tmp_path / f"in{num_lines}.txt", tmp_path / f"out{num_lines}.txt"
        lines = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(num_lines)]
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(wrapper), str(SCRIPTS / "translate.py"), "--model", str(model_dir), "--input_file",
             str(source), "--output_file", str(output), "--max_new_tokens", "4", "--num_beams", "1",
             "--batch_size", "256"],
            env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert output.read_text(encoding="utf-8").count("\n") == num_lines
        peaks[num_lines] = int(result.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    print("peak RSS kB:", peaks)
    assert peaks[100_000] - peaks[1_000] < 60_000
