"""Tests for `hf_gru_attn.data`: every input shape, bad inputs, and `tokenize_dataset` (BL-28, BL-29, BL-31)."""

import json
import logging
import shutil
from pathlib import Path

import datasets
import pytest

from hf_gru_attn.data import BUNDLED_MULTI30K_DIR, load_bundled_multi30k, load_parallel_dataset, tokenize_dataset
from hf_gru_attn.tokenization import train_tokenizer


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def head(path: Path, num_lines: int) -> list[str]:
    """First `num_lines` lines of a UTF-8 file, split on "\\n" only."""
    return path.read_bytes().decode("utf-8").split("\n")[:num_lines]


def expected_pairs(sources: list[str], targets: list[str]) -> list[tuple[str, str]]:
    return [(s.strip(), t.strip()) for s, t in zip(sources, targets, strict=True) if s.strip() and t.strip()]


def pairs_of(dataset: datasets.Dataset, source_lang: str, target_lang: str) -> list[tuple[str, str]]:
    return [(row[source_lang], row[target_lang]) for row in dataset["translation"]]


@pytest.fixture(scope="module")
def tokenizer():
    lines = []
    for lang in ("de", "en"):
        lines += head(BUNDLED_MULTI30K_DIR / f"train.{lang}", 600)
    return train_tokenizer(iter(lines + ["hello world"]), vocab_size=500)


# ---------------------------------------------------------------------------------------------- input shapes


def test_prefix_pairs_drop_empty_sides_and_keep_alignment(tmp_path, caplog):
    de = ["Ein Hund.", "", "Eine Katze.", "Ein Vogel.", "  Zwei Männer  ", "Ein Pferd."]
    en = ["A dog.", "A man.", "   ", "A bird.", "Two men", "A horse."]
    write_lines(tmp_path / "train.de", de)
    write_lines(tmp_path / "train.en", en)
    write_lines(tmp_path / "val.de", de[:1])
    write_lines(tmp_path / "val.en", en[:1])
    with caplog.at_level(logging.WARNING, logger="hf_gru_attn.data"):
        dataset = load_parallel_dataset(
            "de", "en", train_file=tmp_path / "train", validation_file=str(tmp_path / "val")
        )
    assert list(dataset) == ["train", "validation"]
    assert dataset["train"].column_names == ["translation"]
    assert pairs_of(dataset["train"], "de", "en") == expected_pairs(de, en)
    assert pairs_of(dataset["train"], "de", "en")[2] == ("Zwei Männer", "Two men")
    assert "train: dropped 2 of 6 pairs" in caplog.text
    reverse = load_parallel_dataset("en", "de", train_file=tmp_path / "train")
    assert pairs_of(reverse["train"], "en", "de") == expected_pairs(en, de)


def test_opennmt_style_file_pair(shared_data, tmp_path):
    """toy-ende: src-train.txt line 5 is empty in the source (README quirk); that pair is dropped."""
    src = head(shared_data / "toy-ende" / "src-train.txt", 30)
    tgt = head(shared_data / "toy-ende" / "tgt-train.txt", 30)
    assert src[4] == "" and tgt[4] != ""
    src_file, tgt_file = write_lines(tmp_path / "src-train.txt", src), write_lines(tmp_path / "tgt-train.txt", tgt)
    dataset = load_parallel_dataset("en", "de", train_file=(src_file, tgt_file))
    pairs = pairs_of(dataset["train"], "en", "de")
    assert len(pairs) == 29
    assert pairs == expected_pairs(src, tgt)
    assert pairs[4] == (src[5].strip(), tgt[5].strip())


def test_tsv_eng_fra(shared_data, tmp_path):
    lines = head(shared_data / "eng-fra" / "fra.txt", 300)
    assert all(line.count("\t") == 1 for line in lines)
    path = write_lines(tmp_path / "fra.txt", lines)
    dataset = load_parallel_dataset("fr", "en", train_file=path, tsv_languages=("en", "fr"))
    english, french = zip(*(line.split("\t") for line in lines))
    assert pairs_of(dataset["train"], "fr", "en") == expected_pairs(list(french), list(english))
    assert pairs_of(dataset["train"], "fr", "en")[0] == ("Va !", "Go.")


def test_tsv_default_columns_and_attribution_column(tmp_path):
    attribution = "CC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)"
    path = write_lines(tmp_path / "pairs.tsv", [f"Go.\tVa !\t{attribution}", f"Hi.\tSalut !\t{attribution}"])
    dataset = load_parallel_dataset("en", "fr", train_file=path)
    assert pairs_of(dataset["train"], "en", "fr") == [("Go.", "Va !"), ("Hi.", "Salut !")]


def test_jsonl(tmp_path):
    records = [
        {"translation": {"de": "Ein Hund.", "en": "A dog.", "fr": "Un chien."}},
        {"translation": {"de": "Eine Katze.", "en": " ", "fr": "Un chat."}},
        {"translation": {"de": "Ein Vogel.", "en": "A bird.", "fr": "Un oiseau."}},
    ]
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    dataset = load_parallel_dataset("en", "de", train_file=path)
    assert pairs_of(dataset["train"], "en", "de") == [("A dog.", "Ein Hund."), ("A bird.", "Ein Vogel.")]
    assert dataset["train"].features["translation"].languages == ["en", "de"]


def test_dataset_name_goes_through_datasets_load_dataset(tmp_path):
    """A local dataset directory stands in for a Hub name (tests run offline); the cache stays in cache_dir."""
    data_dir = tmp_path / "hub_like"
    data_dir.mkdir()
    rows = {"train": [("Ein Hund.", "A dog."), ("Ein Vogel.", "A bird.")], "validation": [("Ein Pferd.", "A horse.")]}
    for split, pairs in rows.items():
        lines = [json.dumps({"id": i, "translation": {"de": de, "en": en}}) for i, (de, en) in enumerate(pairs)]
        write_lines(data_dir / f"{split}.jsonl", lines)
    cache_dir = tmp_path / "cache"
    dataset = load_parallel_dataset("de", "en", dataset_name=str(data_dir), cache_dir=cache_dir)
    assert sorted(dataset) == ["train", "validation"]
    for split, pairs in rows.items():
        assert dataset[split].column_names == ["translation"]
        assert pairs_of(dataset[split], "de", "en") == pairs
        assert all(Path(f["filename"]).is_relative_to(cache_dir) for f in dataset[split].cache_files)
    with pytest.raises(ValueError, match=r"\['fr'\] not present; available: \['de', 'en'\]"):
        load_parallel_dataset("de", "fr", dataset_name=str(data_dir), cache_dir=cache_dir)


def test_bundled_multi30k():
    dataset = load_bundled_multi30k()
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 29000, "validation": 1014, "test": 1000}
    for split, stem in (("train", "train"), ("validation", "val"), ("test", "test2016")):
        de, en = head(BUNDLED_MULTI30K_DIR / f"{stem}.de", 3), head(BUNDLED_MULTI30K_DIR / f"{stem}.en", 3)
        assert pairs_of(dataset[split].select(range(3)), "de", "en") == expected_pairs(de, en)
    assert dataset["train"][0]["translation"]["en"] == "Two young, White males are outside near many bushes."
    reverse = load_bundled_multi30k("en", "de")
    assert reverse["test"][0]["translation"] == dataset["test"][0]["translation"]
    with pytest.raises(ValueError, match=r"available: \['de', 'en'\]"):
        load_bundled_multi30k("de", "fr")


def test_bundled_multi30k_missing(monkeypatch, tmp_path):
    monkeypatch.setattr("hf_gru_attn.data.BUNDLED_MULTI30K_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_bundled_multi30k()


# ------------------------------------------------------------------------------------------------ bad input


def test_line_count_mismatch_names_both_files(tmp_path):
    src = write_lines(tmp_path / "src.txt", ["a", "b", "c"])
    tgt = write_lines(tmp_path / "tgt.txt", ["x", "y"])
    with pytest.raises(ValueError, match="line count") as error:
        load_parallel_dataset("en", "de", train_file=(src, tgt))
    assert f"{src} has 3 lines" in str(error.value)
    assert f"{tgt} has 2 lines" in str(error.value)


@pytest.mark.parametrize(
    "lines, bad_line, fields",
    [
        (["Go.\tVa !", "Hi.\tSalut !", "no tab here"], 3, 1),
        (["Go.\tVa !", "Hi.\tSalut !\textra"], 2, 3),
        (["one\ttwo\tthree\tfour"], 1, 4),
    ],
)
def test_tsv_wrong_field_count(tmp_path, lines, bad_line, fields):
    path = write_lines(tmp_path / "pairs.tsv", lines)
    with pytest.raises(ValueError, match=f"tab-separated fields, got {fields}") as error:
        load_parallel_dataset("en", "fr", train_file=path)
    assert f"{path}:{bad_line}:" in str(error.value)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_bytes(b"Go.\tVa !\nCaf\xe9\tcaf\xc3\xa9\n")
    with pytest.raises(ValueError, match="not valid UTF-8") as error:
        load_parallel_dataset("en", "fr", train_file=tsv)
    assert f"{tsv}:2:" in str(error.value)
    write_lines(tmp_path / "train.en", ["a", "b", "c"])
    (tmp_path / "train.de").write_bytes(b"a\nb\n\xff\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'train.de'}:3: not valid UTF-8"):
        load_parallel_dataset("de", "en", train_file=tmp_path / "train")


def test_missing_language_lists_available(tmp_path):
    write_lines(tmp_path / "train.de", ["a"])
    write_lines(tmp_path / "train.en", ["b"])
    with pytest.raises(ValueError, match=r"\['fr'\] not present; available: \['de', 'en'\]"):
        load_parallel_dataset("de", "fr", train_file=tmp_path / "train")
    jsonl = write_lines(tmp_path / "train.jsonl", [json.dumps({"translation": {"de": "a", "en": "b"}})])
    with pytest.raises(ValueError, match=rf"{jsonl}:1: language\(s\) \['fr'\] not present; available: \['de', 'en'\]"):
        load_parallel_dataset("fr", "en", train_file=jsonl)
    tsv = write_lines(tmp_path / "pairs.tsv", ["Go.\tVa !"])
    with pytest.raises(ValueError, match=r"available: \['en', 'fr'\]"):
        load_parallel_dataset("de", "en", train_file=tsv, tsv_languages=("en", "fr"))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_parallel_dataset("de", "en", train_file=tmp_path / "nothere")
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        load_parallel_dataset("de", "en", train_file=tmp_path / "nothere.jsonl")
    src = write_lines(tmp_path / "src.txt", ["a"])
    with pytest.raises(FileNotFoundError, match="tgt.txt"):
        load_parallel_dataset("en", "de", train_file=(src, tmp_path / "tgt.txt"))
    write_lines(tmp_path / "train.de", ["a"])
    with pytest.raises(ValueError, match=r"\['en'\] not present; available: \['de'\]"):
        load_parallel_dataset("de", "en", train_file=tmp_path / "train")


def test_malformed_jsonl_and_bad_arguments(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps({"translation": {"de": "a", "en": "b"}}), "{oops"])
    with pytest.raises(ValueError, match=f"{path}:2: not valid JSON"):
        load_parallel_dataset("de", "en", train_file=path)
    path = write_lines(tmp_path / "other.jsonl", [json.dumps({"de": "a", "en": "b"})])
    with pytest.raises(ValueError, match=f"{path}:1: expected a JSON object"):
        load_parallel_dataset("de", "en", train_file=path)
    with pytest.raises(ValueError, match="must differ"):
        load_parallel_dataset("de", "de", train_file=path)
    with pytest.raises(ValueError, match="either dataset_name or local files"):
        load_parallel_dataset("de", "en")
    with pytest.raises(ValueError, match="either dataset_name or local files"):
        load_parallel_dataset("de", "en", train_file=path, dataset_name="wmt16")


# ------------------------------------------------------------------------------------------- tokenize_dataset


def small_dataset(pairs: list[tuple[str, str]]) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"translation": [{"de": de, "en": en} for de, en in pairs]})}
    )


FIVE_PAIRS = [
    ("Ein Hund läuft.", "A dog runs."),
    ("Zwei Männer sitzen.", "Two men sit."),
    ("Eine Frau singt.", "A woman sings."),
    ("Ein Kind spielt im Park.", "A child plays in the park."),
    ("Hallo.", "hello </s>"),
]


def test_tokenize_batches_and_num_proc(tokenizer):
    """BL-29: 5 rows in batches of 2 (last one partial), then with num_proc=2: same rows, only model columns."""
    dataset = small_dataset(FIVE_PAIRS)
    one = tokenize_dataset(dataset, tokenizer, "de", "en", 32, 32, batch_size=2)
    two = tokenize_dataset(dataset, tokenizer, "de", "en", 32, 32, batch_size=2, num_proc=2)
    assert one["train"].num_rows == 5
    assert set(one["train"].column_names) == {"input_ids", "attention_mask", "labels"}
    assert one["train"].to_dict() == two["train"].to_dict()
    for row, (de, en) in zip(one["train"], FIVE_PAIRS, strict=True):
        assert row["input_ids"] == tokenizer(de)["input_ids"]
        assert row["attention_mask"] == [1] * len(row["input_ids"])
        assert row["labels"] == tokenizer(text_target=en)["input_ids"]
        assert row["labels"].count(tokenizer.eos_token_id) == 1  # BL-28: also for "hello </s>"
        assert row["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(one["train"][0]["labels"], skip_special_tokens=True) == "A dog runs."
    assert tokenizer.decode(one["train"][4]["labels"], skip_special_tokens=True) == "hello"


def test_tokenize_truncation_keeps_one_eos(tokenizer):
    """BL-31: 30+ token source and target cut to 8 tokens each, single EOS last, no -100."""
    long_de, long_en = " ".join(["Ein Mann fährt Fahrrad ."] * 8), " ".join(["A man rides a bike ."] * 8)
    assert min(len(tokenizer(long_de)["input_ids"]), len(tokenizer(long_en)["input_ids"])) >= 30
    row = tokenize_dataset(small_dataset([(long_de, long_en)]), tokenizer, "de", "en", 8, 6)["train"][0]
    assert len(row["input_ids"]) == 8 and len(row["labels"]) == 6
    for ids in (row["input_ids"], row["labels"]):
        assert ids[-1] == tokenizer.eos_token_id
        assert ids.count(tokenizer.eos_token_id) == 1
        assert -100 not in ids


def test_tokenize_drops_empty_pairs_even_a_whole_batch(tokenizer):
    pairs = [("", "A dog."), ("Ein Hund.", "   "), ("Ein Vogel.", "A bird."), (" ", "")]
    tokenized = tokenize_dataset(small_dataset(pairs), tokenizer, "de", "en", 16, 16, batch_size=2)
    assert tokenized["train"]["input_ids"] == [tokenizer("Ein Vogel.")["input_ids"]]


def test_tokenize_twice_or_wrong_language_is_refused(tokenizer):
    tokenized = tokenize_dataset(small_dataset(FIVE_PAIRS), tokenizer, "de", "en", 16, 16)
    with pytest.raises(ValueError, match="no 'translation' column.*already tokenized"):
        tokenize_dataset(tokenized, tokenizer, "de", "en", 16, 16)
    with pytest.raises(ValueError, match=r"\['fr'\] not present; available: \['de', 'en'\]"):
        tokenize_dataset(small_dataset(FIVE_PAIRS), tokenizer, "de", "fr", 16, 16)


def test_tokenize_cache_stays_in_cache_dir(tokenizer, tmp_path):
    cache_dir = tmp_path / "cache"
    dataset = small_dataset(FIVE_PAIRS)
    first = tokenize_dataset(dataset, tokenizer, "de", "en", 16, 16, cache_dir=cache_dir)
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 1 and files[0].startswith("train-tokenized-")
    assert Path(first["train"].cache_files[0]["filename"]).parent == cache_dir
    again = tokenize_dataset(dataset, tokenizer, "de", "en", 16, 16, cache_dir=cache_dir)
    assert sorted(p.name for p in cache_dir.iterdir()) == files
    assert again["train"].to_dict() == first["train"].to_dict()
    tokenize_dataset(dataset, tokenizer, "de", "en", 8, 16, cache_dir=cache_dir)
    assert len(list(cache_dir.iterdir())) == 2


def test_tokenize_real_file_pairs_end_to_end(shared_data, tmp_path, tokenizer):
    """toy-ende sample through the loader and tokenizer: one row per non-empty pair, all rows within limits."""
    for name in ("src-train.txt", "tgt-train.txt"):
        write_lines(tmp_path / name, head(shared_data / "toy-ende" / name, 40))
    shutil.copy(tmp_path / "src-train.txt", tmp_path / "src-val.txt")
    shutil.copy(tmp_path / "tgt-train.txt", tmp_path / "tgt-val.txt")
    dataset = load_parallel_dataset(
        "en",
        "de",
        train_file=(tmp_path / "src-train.txt", tmp_path / "tgt-train.txt"),
        validation_file=(tmp_path / "src-val.txt", tmp_path / "tgt-val.txt"),
    )
    tokenized = tokenize_dataset(dataset, tokenizer, "en", "de", 24, 20, cache_dir=tmp_path / "cache")
    for split in ("train", "validation"):
        assert tokenized[split].num_rows == 39
        assert all(len(ids) <= 24 and ids[-1] == 2 for ids in tokenized[split]["input_ids"])
        assert all(len(ids) <= 20 and ids.count(2) == 1 for ids in tokenized[split]["labels"])
