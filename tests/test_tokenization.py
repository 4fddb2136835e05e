"""Tests for `hf_gru_attn.tokenization.train_tokenizer` and `scripts/train_tokenizer.py` (BL-21, 27, 28, 30-32)."""

import importlib.util
import unicodedata
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hf_gru_attn.tokenization import train_tokenizer


REPO_ROOT = Path(__file__).resolve().parent.parent
MULTI30K = REPO_ROOT / "data" / "multi30k"
EXTRA_LINES = [
    "café yếu",
    "Hello,  world! (Two spaces) «quotes» 'single' — dash; 3.5 km?",
    "The quick brown fox jumps over the lazy dog.",
]
SAMPLES = [
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Two young, White males are outside near many bushes.",
    "Hello,  world! (Two spaces) «quotes» 'single' — dash; 3.5 km?",
    "café yếu",
    "A man rides a bike .",
]
VOCAB_SIZES = {"bpe": 800, "unigram": 400}


def corpus(num_lines: int) -> list[str]:
    """First `num_lines` Multi30k training sentences of each language, plus `EXTRA_LINES`."""
    lines = []
    for lang in ("de", "en"):
        lines += (MULTI30K / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:num_lines]
    return lines + EXTRA_LINES


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer(request):
    num_lines = 800 if request.param == "bpe" else 250  # Unigram training is slower
    return train_tokenizer(iter(corpus(num_lines)), vocab_size=VOCAB_SIZES[request.param], model=request.param)


def test_special_tokens_fixed_ids_and_defaults(tokenizer):
    expected = {"pad": ("<pad>", 0), "bos": ("<s>", 1), "eos": ("</s>", 2), "unk": ("<unk>", 3)}
    for name, (token, token_id) in expected.items():
        assert getattr(tokenizer, f"{name}_token") == token
        assert getattr(tokenizer, f"{name}_token_id") == token_id
        assert tokenizer.backend_tokenizer.token_to_id(token) == token_id
    assert tokenizer.padding_side == "right"  # BL-30
    assert tokenizer.truncation_side == "right"
    assert tokenizer.model_max_length == 256
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    assert sorted(tokenizer("a b")) == ["attention_mask", "input_ids"]


def test_vocab_size_reached(tokenizer):
    model = type(tokenizer.backend_tokenizer.model).__name__.lower()
    assert len(tokenizer) == tokenizer.backend_tokenizer.get_vocab_size() == VOCAB_SIZES[model]


@pytest.mark.parametrize(
    "text", ["A man rides a bike .", "hello </s>", "hello</s>", "a </s> b", "</s>", "</s></s> x </s>"]
)
def test_eos_appended_exactly_once(tokenizer, text):
    """BL-28: a literal "</s>" in the text never adds an EOS; the post-processor adds exactly one, last."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(text, text_target=text)
    for ids in (encoded["input_ids"], encoded["labels"], tokenizer(text_target=text)["input_ids"]):
        assert ids.count(eos) == 1
        assert ids[-1] == eos
        assert all(not (a == b == eos) for a, b in zip(ids, ids[1:]))


def test_literal_special_tokens_are_removed_from_text(tokenizer):
    """Special-token strings typed in text are deleted by the normaliser, never read as special ids."""
    assert tokenizer("hello </s>")["input_ids"] == tokenizer("hello")["input_ids"]
    assert tokenizer("<s>Ein Mann</s>")["input_ids"] == tokenizer("Ein Mann")["input_ids"]
    assert tokenizer("<pad> x <unk>")["input_ids"] == tokenizer("x")["input_ids"]
    assert tokenizer.decode(tokenizer("hello </s>")["input_ids"], skip_special_tokens=True) == "hello"


def test_decode_round_trip(tokenizer):
    """Metaspace keeps spaces (also doubled ones), punctuation and case: decode(encode(x)) == x."""
    for text in SAMPLES:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(tokenizer("Two  men")["input_ids"], skip_special_tokens=False) == "Two  men</s>"


def test_nfc_and_nfd_give_same_ids(tokenizer):
    """BL-32: composed and decomposed input encode identically; the decoded text is NFC."""
    text = "café yếu"
    nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
    assert nfc != nfd
    ids = tokenizer(nfc)["input_ids"]
    assert tokenizer(nfd)["input_ids"] == ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == nfc


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_unknown_characters_map_to_unk(model):
    """BL-21: characters unseen in ASCII-only training become <unk> (one per run), ids < vocab size."""
    ascii_lines = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs."] * 20
    tokenizer = train_tokenizer(iter(ascii_lines), vocab_size=60, model=model)
    text = "naïve 猫 🙂 zzqx"
    ids = tokenizer(text)["input_ids"]
    assert all(0 <= i < len(tokenizer) for i in ids)
    runs_of_non_ascii = 3  # "ï", "猫", "🙂", each between ASCII characters or spaces
    assert ids.count(tokenizer.unk_token_id) == runs_of_non_ascii
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(decoded, str)
    assert decoded.replace(" ", "") == "nave" + "zzqx"


def test_padding_right(tokenizer):
    batch = tokenizer(["a", "a b c"], padding=True)
    short, long = (tokenizer(t)["input_ids"] for t in ("a", "a b c"))
    width = len(long)
    assert batch["input_ids"][1] == long
    assert batch["input_ids"][0] == short + [tokenizer.pad_token_id] * (width - len(short))
    assert batch["attention_mask"][0] == [1] * len(short) + [0] * (width - len(short))


def test_truncation_keeps_one_final_eos(tokenizer):
    """BL-31: truncated sequences have len == max_length and end with their single EOS."""
    long_text = " ".join(["Ein Mann fährt Fahrrad ."] * 8)
    assert len(tokenizer(long_text)["input_ids"]) > 30
    encoded = tokenizer(long_text, text_target=long_text, truncation=True, max_length=8)
    for ids in (encoded["input_ids"], encoded["labels"]):
        assert len(ids) == 8
        assert ids[-1] == tokenizer.eos_token_id
        assert ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer(long_text, truncation=True)["input_ids"][:7] == encoded["input_ids"][:7]


def test_model_max_length_bounds_truncation():
    tokenizer = train_tokenizer(iter(corpus(100)), vocab_size=300, model_max_length=16)
    ids = tokenizer(" ".join(["Ein Mann fährt Fahrrad ."] * 8), truncation=True)["input_ids"]
    assert len(ids) == 16
    assert ids[-1] == tokenizer.eos_token_id


def test_save_and_reload_keep_ids_and_special_tokens(tokenizer, tmp_path):
    """BL-27: special tokens, ids, padding and settings survive save_pretrained + AutoTokenizer."""
    tokenizer.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for name in ("pad", "bos", "eos", "unk"):
        token = getattr(reloaded, f"{name}_token")
        assert token is not None
        assert token == getattr(tokenizer, f"{name}_token")
        assert getattr(reloaded, f"{name}_token_id") == reloaded.backend_tokenizer.token_to_id(token)
        assert getattr(reloaded, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id")
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    for text in [*SAMPLES, "<pad> literal", "hello </s>"]:
        assert reloaded(text, text_target=text) == tokenizer(text, text_target=text)
    assert reloaded(["a", "a b c"], padding=True) == tokenizer(["a", "a b c"], padding=True)
    assert reloaded.padding_side == "right"
    assert reloaded.model_max_length == 256
    assert reloaded.split_special_tokens is True
    assert reloaded.model_input_names == ["input_ids", "attention_mask"]


def test_train_from_files(tmp_path):
    """Training files are read one sentence per line; the result covers their characters and has fixed ids."""
    files = []
    for lang in ("de", "en"):
        path = tmp_path / f"train.{lang}"
        lines = (MULTI30K / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:300]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(path)
    tokenizer = train_tokenizer([str(files[0]), files[1]], vocab_size=500)
    assert len(tokenizer) == 500
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>", "<unk>")] == [0, 1, 2, 3]
    characters = set(files[0].read_text() + files[1].read_text()) - {"\n", " "}
    text = "".join(sorted(characters))
    assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'bpe' or 'unigram'"):
        train_tokenizer(iter(["a b"]), model="wordpiece")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(iter(["a b"]), vocab_size=4)
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_tokenizer([missing])
    with pytest.raises(FileNotFoundError, match="iterator"):
        train_tokenizer(["A sentence, not a file."])


def load_script():
    path = REPO_ROOT / "scripts" / "train_tokenizer.py"
    spec = importlib.util.spec_from_file_location("train_tokenizer_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_trains_saves_and_refuses_to_overwrite(tmp_path, capsys):
    script = load_script()
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(corpus(200)) + "\n", encoding="utf-8")
    output_dir = tmp_path / "tok"
    argv = ["--train_files", str(train_file), "--vocab_size", "300", "--model", "bpe", "--output_dir", str(output_dir)]
    assert script.main(argv) == 0
    reloaded = AutoTokenizer.from_pretrained(output_dir)
    assert len(reloaded) == 300
    assert reloaded.eos_token_id == 2

    assert script.main(argv) == 1
    assert "--overwrite_output_dir" in capsys.readouterr().err
    overwrite = [*argv[:-4], "--model", "unigram", "--output_dir", str(output_dir), "--overwrite_output_dir"]
    assert script.main(overwrite) == 0
    assert type(AutoTokenizer.from_pretrained(output_dir).backend_tokenizer.model).__name__ == "Unigram"
