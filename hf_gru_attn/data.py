"""Parallel corpora as 🤗 `datasets.DatasetDict`s with a `translation` column, and their seq2seq tokenization.

Every split has one column `translation` holding `{source_lang: str, target_lang: str}` dicts (a
`datasets.Translation` feature for local files), the layout of the Hub translation datasets (e.g. `wmt16`) and of
`examples/pytorch/translation/run_translation.py` in transformers.
"""

import json
import logging
import os
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase


logger = logging.getLogger(__name__)

BUNDLED_MULTI30K_DIR = Path(__file__).parent.parent / "data" / "multi30k"

SplitSource = str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike]


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file without their `\\n`/`\\r\\n` terminator.

    Lines are split on `\\n` only (not on the other characters `str.splitlines` treats as breaks), so line *i*
    here is line *i* of `wc -l`/`sed -n ip`. Raises `FileNotFoundError` if `path` is not a file and `ValueError`
    naming the file and the 1-based line number on invalid UTF-8.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = []
    with path.open("rb") as file:
        for line_number, raw_line in enumerate(file, start=1):
            try:
                lines.append(raw_line.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid UTF-8 ({error.reason})") from None
    return lines


def _check_languages(available: list[str], source_lang: str, target_lang: str, where: str) -> None:
    """Raise `ValueError` naming `where` and listing `available` if `source_lang` or `target_lang` is missing."""
    missing = [lang for lang in (source_lang, target_lang) if lang not in available]
    if missing:
        raise ValueError(f"{where}: language(s) {missing} not present; available: {sorted(available)}")


def _read_text_pair(source_path: Path, target_path: Path) -> list[tuple[str, str]]:
    """(source, target) pairs from two line-aligned files; `ValueError` naming both files if line counts differ."""
    sources, targets = _read_lines(source_path), _read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"Parallel files differ in line count: {source_path} has {len(sources)} lines, "
            f"{target_path} has {len(targets)} lines"
        )
    return list(zip(sources, targets))


def _read_prefix(prefix: Path, source_lang: str, target_lang: str) -> list[tuple[str, str]]:
    """Pairs from `{prefix}.{source_lang}` and `{prefix}.{target_lang}` (e.g. `data/multi30k/train.de`/`.en`)."""
    available = [
        path.name[len(prefix.name) + 1 :] for path in prefix.parent.glob(f"{prefix.name}.*") if path.is_file()
    ]
    if not available:
        raise FileNotFoundError(
            f"{prefix}: no such file, and no line-aligned files {prefix}.<lang> (e.g. {prefix}.{source_lang})"
        )
    _check_languages(available, source_lang, target_lang, f"{prefix}.<lang>")
    return _read_text_pair(Path(f"{prefix}.{source_lang}"), Path(f"{prefix}.{target_lang}"))


def _read_tsv(path: Path, source_lang: str, target_lang: str, tsv_languages: tuple[str, str]) -> list[tuple[str, str]]:
    """Pairs from a `lang1<TAB>lang2[<TAB>attribution]` file such as the Tatoeba/manythings `fra.txt`.

    Line 1 fixes the field count: 2, or 3 where the third column is an attribution (later manythings releases add
    "CC-BY 2.0 (France) Attribution: tatoeba.org #..."), which is ignored. A blank line is an empty pair.
    Raises `ValueError` if `tsv_languages` lacks a language (listing them), or naming file and line when a line
    has another field count.
    """
    _check_languages(list(tsv_languages), source_lang, target_lang, f"{path} (tsv_languages)")
    source_column, target_column = tsv_languages.index(source_lang), tsv_languages.index(target_lang)
    pairs, num_fields = [], None
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            pairs.append(("", ""))
            continue
        fields = line.split("\t")
        if num_fields is None and len(fields) in (2, 3):
            num_fields = len(fields)
        if len(fields) != num_fields:
            expected = num_fields or "2 (or 3 with an attribution column)"
            raise ValueError(f"{path}:{line_number}: expected {expected} tab-separated fields, got {len(fields)}")
        pairs.append((fields[source_column], fields[target_column]))
    return pairs


def _read_jsonl(path: Path, source_lang: str, target_lang: str) -> list[tuple[str, str]]:
    """Pairs from JSON lines `{"translation": {"de": "...", "en": "..."}}`; a blank line is an empty pair.

    Raises `ValueError` naming file and line for invalid JSON, another record layout, a missing language (listing
    the record's languages) or a non-string text.
    """
    pairs = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            pairs.append(("", ""))
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
        translation = record.get("translation") if isinstance(record, dict) else None
        if not isinstance(translation, dict):
            raise ValueError(f'{where}: expected a JSON object {{"translation": {{"<lang>": "<text>", ...}}}}')
        _check_languages(list(translation), source_lang, target_lang, where)
        pair = (translation[source_lang], translation[target_lang])
        if not all(isinstance(text, str) for text in pair):
            raise ValueError(f"{where}: the {source_lang!r} and {target_lang!r} texts must be strings")
        pairs.append(pair)
    return pairs


def _to_dataset(pairs: list[tuple[str, str]], source_lang: str, target_lang: str, origin: str) -> datasets.Dataset:
    """Dataset of stripped pairs; pairs with an empty or whitespace-only side are dropped and the count logged."""
    kept = [{source_lang: s.strip(), target_lang: t.strip()} for s, t in pairs if s.strip() and t.strip()]
    if len(kept) < len(pairs):
        logger.warning("%s: dropped %d of %d pairs with an empty side", origin, len(pairs) - len(kept), len(pairs))
    features = datasets.Features({"translation": datasets.Translation(languages=[source_lang, target_lang])})
    return datasets.Dataset.from_dict({"translation": kept}, features=features)


def _read_split(
    source: SplitSource, source_lang: str, target_lang: str, tsv_languages: tuple[str, str]
) -> list[tuple[str, str]]:
    """Dispatch one split's source to the matching reader (see `load_parallel_dataset`)."""
    if isinstance(source, (tuple, list)):
        source_path, target_path = source
        return _read_text_pair(Path(source_path), Path(target_path))
    path = Path(source)
    if not path.is_file():
        return _read_prefix(path, source_lang, target_lang)
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path, source_lang, target_lang)
    return _read_tsv(path, source_lang, target_lang, tsv_languages)


def _translation_languages(dataset: datasets.Dataset, where: str) -> list[str]:
    """Language codes of the `translation` column; `ValueError` if there is none (e.g. already tokenized)."""
    if "translation" not in dataset.column_names:
        raise ValueError(f"{where}: no 'translation' column (columns: {dataset.column_names}); already tokenized?")
    feature = dataset.features["translation"]
    return list(feature.languages) if isinstance(feature, datasets.Translation) else list(feature)


def load_parallel_dataset(
    source_lang: str,
    target_lang: str,
    train_file: SplitSource | None = None,
    validation_file: SplitSource | None = None,
    test_file: SplitSource | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    tsv_languages: tuple[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load a parallel corpus into a `DatasetDict` with one column `translation` of `{source_lang, target_lang}` dicts.

    Local data: `train_file`, `validation_file`, `test_file` (splits `train`, `validation`, `test`; the ones given),
    each one of:

    - a pair of line-aligned files `(source_file, target_file)`, e.g. OpenNMT's `("src-train.txt", "tgt-train.txt")`;
    - a prefix `dir/train` naming `dir/train.{source_lang}` and `dir/train.{target_lang}` (Multi30k, WMT style);
    - an existing `*.jsonl`/`*.json` file of JSON lines `{"translation": {"de": "...", "en": "..."}}`;
    - any other existing file: TSV `text<TAB>text[<TAB>attribution]` such as Tatoeba/manythings `fra.txt` (2
      columns, English first); `tsv_languages` names the first two columns, by default
      `(source_lang, target_lang)`, so `fra.txt` needs `tsv_languages=("en", "fr")` for French→English.

    Files must be UTF-8. Texts are stripped; pairs with an empty or whitespace-only side are dropped (the count
    is logged as a warning) and the other pairs stay aligned.

    Hub data: `dataset_name` is passed to `datasets.load_dataset(dataset_name, dataset_config_name,
    cache_dir=cache_dir)` (e.g. `"wmt16"`, `"de-en"`; needs network, or a local dataset directory). Its splits must
    have a `translation` column holding both languages; only that column is kept and empty pairs are left to
    `tokenize_dataset`.

    Args:
        source_lang (`str`), target_lang (`str`): language codes, e.g. `"de"`, `"en"`; must differ.
        train_file, validation_file, test_file (`str`, `os.PathLike` or a pair of them, *optional*): local splits.
        dataset_name (`str`, *optional*): a `datasets.load_dataset` name or path, instead of local files.
        dataset_config_name (`str`, *optional*): its configuration.
        tsv_languages (`tuple[str, str]`, *optional*): languages of the two TSV columns.
        cache_dir (`str` or `os.PathLike`, *optional*): `datasets` cache for `dataset_name`.

    Returns:
        `datasets.DatasetDict`: one `datasets.Dataset` per split, each with the single column `translation`.

    Raises:
        FileNotFoundError: a file (or, for a prefix, every `{prefix}.<lang>` file) does not exist.
        ValueError: line counts of paired files differ (names both files and counts); a TSV line has the wrong
            number of fields, a JSON line is malformed, or a file is not UTF-8 (names file and line); a language
            is not present (lists the available ones); `source_lang == target_lang`; both or neither of
            `dataset_name` and the files are given.
    """
    if source_lang == target_lang:
        raise ValueError(f"source_lang and target_lang must differ, got {source_lang!r} twice")
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: source for split, source in files.items() if source is not None}
    if (dataset_name is None) == (not files):
        raise ValueError("Give either dataset_name or local files (train_file, validation_file, test_file), not both")
    if dataset_name is not None:
        dataset_dict = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        for split, dataset in dataset_dict.items():
            where = f"{dataset_name} split {split!r}"
            _check_languages(_translation_languages(dataset, where), source_lang, target_lang, where)
        return dataset_dict.select_columns(["translation"])
    tsv_languages = tsv_languages or (source_lang, target_lang)
    return datasets.DatasetDict(
        {
            split: _to_dataset(
                _read_split(source, source_lang, target_lang, tsv_languages), source_lang, target_lang, split
            )
            for split, source in files.items()
        }
    )


def load_bundled_multi30k(source_lang: str = "de", target_lang: str = "en") -> datasets.DatasetDict:
    """Load the Multi30k (WMT16 multimodal task 1) copy shipped in the repository's `data/multi30k`.

    Splits `train` (29,000 pairs), `validation` (1,014, file `val`) and `test` (1,000, file `test2016`); raw,
    original case and punctuation. Source, terms and citation (Elliott et al. 2016, doi:10.18653/v1/W16-3210):
    `data/multi30k/README.md`. The directory is found relative to the package (`hf_gru_attn/../data/multi30k`), so
    it exists in a source checkout or editable install, not in a wheel install.

    Args:
        source_lang (`str`, *optional*, defaults to `"de"`), target_lang (`str`, *optional*, defaults to `"en"`):
            `"de"` and `"en"` in either order.

    Returns:
        `datasets.DatasetDict` with splits `train`, `validation`, `test` and the column `translation`.

    Raises:
        FileNotFoundError: the bundled directory is missing.
        ValueError: a language other than `"de"`/`"en"` (lists the available ones).
    """
    if not BUNDLED_MULTI30K_DIR.is_dir():
        raise FileNotFoundError(
            f"Bundled Multi30k not found at {BUNDLED_MULTI30K_DIR}; it ships with the repository checkout "
            "(data/multi30k), so use a source checkout or `pip install -e .`"
        )
    return load_parallel_dataset(
        source_lang,
        target_lang,
        train_file=BUNDLED_MULTI30K_DIR / "train",
        validation_file=BUNDLED_MULTI30K_DIR / "val",
        test_file=BUNDLED_MULTI30K_DIR / "test2016",
    )


def _preprocess(
    batch: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    source_lang: str,
    target_lang: str,
    max_source_length: int,
    max_target_length: int,
) -> dict[str, list[list[int]]]:
    """Batched `map` function: drop pairs with an empty side, tokenize sources and targets (`labels`)."""
    pairs = [
        (pair[source_lang], pair[target_lang])
        for pair in batch["translation"]
        if (pair[source_lang] or "").strip() and (pair[target_lang] or "").strip()
    ]
    if not pairs:
        return {"input_ids": [], "attention_mask": [], "labels": []}
    sources, targets = zip(*pairs)
    model_inputs = tokenizer(list(sources), truncation=True, max_length=max_source_length)
    labels = tokenizer(text_target=list(targets), truncation=True, max_length=max_target_length)
    model_inputs["labels"] = labels["input_ids"]
    return model_inputs


def tokenize_dataset(
    dataset_dict: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    source_lang: str,
    target_lang: str,
    max_source_length: int,
    max_target_length: int,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 1000,
) -> datasets.DatasetDict:
    """Tokenize a `translation` DatasetDict into `input_ids`, `attention_mask` and `labels` columns.

    Batched `Dataset.map` calling `tokenizer(sources, truncation=True, max_length=max_source_length)` and
    `tokenizer(text_target=targets, truncation=True, max_length=max_target_length)` (as transformers'
    `run_translation.py`), with `remove_columns` so the batch may shrink: pairs with an empty or whitespace-only
    side are dropped. With the package tokenizer every row ends with exactly one `</s>` and
    `len(input_ids) <= max_source_length`, `len(labels) <= max_target_length`, truncated or not. Rows are
    unpadded; pad in the collator (`DataCollatorForSeq2Seq`, labels padded with -100).

    Args:
        dataset_dict (`datasets.DatasetDict`): splits with a `translation` column (see `load_parallel_dataset`).
        tokenizer (`PreTrainedTokenizerBase`): e.g. from `train_tokenizer` or `AutoTokenizer.from_pretrained`.
        source_lang (`str`), target_lang (`str`): keys of the `translation` dicts.
        max_source_length (`int`), max_target_length (`int`): maximum lengths in tokens, EOS included.
        num_proc (`int`, *optional*): worker processes for `map`; the result is the same as with one.
        cache_dir (`str` or `os.PathLike`, *optional*): directory for the `map` cache files, named
            `{split}-tokenized-{fingerprint}.arrow` where the fingerprint hashes the split's data, the tokenizer and
            the arguments, so a rerun with the same inputs reloads them. Without it, in-memory splits are tokenized
            in memory and file-backed ones are cached next to their data by `datasets`.
        batch_size (`int`, *optional*, defaults to 1000): rows per `map` batch.

    Returns:
        `datasets.DatasetDict`: the same splits with exactly the columns `input_ids`, `attention_mask`, `labels`
        (lists of `int`), possibly fewer rows (empty pairs removed).

    Raises:
        ValueError: a split has no `translation` column (e.g. it is already tokenized) or lacks a language (lists
            the available ones).
    """
    for split, dataset in dataset_dict.items():
        where = f"split {split!r}"
        _check_languages(_translation_languages(dataset, where), source_lang, target_lang, where)
    fn_kwargs = {
        "tokenizer": tokenizer,
        "source_lang": source_lang,
        "target_lang": target_lang,
        "max_source_length": max_source_length,
        "max_target_length": max_target_length,
    }
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tokenized = {}
    for split, dataset in dataset_dict.items():
        fingerprint = cache_file_name = None
        if cache_dir is not None:
            # `_fingerprint` hashes the split's content (datasets has no public accessor for it).
            fingerprint = Hasher.hash([dataset._fingerprint, fn_kwargs])
            cache_file_name = str(Path(cache_dir) / f"{split}-tokenized-{fingerprint}.arrow")
        tokenized[split] = dataset.map(
            _preprocess,
            batched=True,
            batch_size=batch_size,
            fn_kwargs=fn_kwargs,
            remove_columns=dataset.column_names,
            num_proc=num_proc,
            cache_file_name=cache_file_name,
            new_fingerprint=fingerprint,
            desc=f"Tokenizing {split}",
        )
    return datasets.DatasetDict(tokenized)


class Seq2SeqCollator(DataCollatorForSeq2Seq):
    """
    transformers' `DataCollatorForSeq2Seq` (dynamic padding; labels padded with `label_pad_token_id`, -100 by default;
    `decoder_input_ids` from `model.prepare_decoder_input_ids_from_labels`) that leaves `labels` out of a batch
    without targets.

    transformers 5.24's collator returns `labels: None` for unlabelled features, and `Seq2SeqTrainer.prediction_step`
    then runs the loss forward without targets, so `predict()` on source-only data fails (BL-11).

    Returns:
        `dict[str, torch.Tensor]`: `input_ids`, `attention_mask` `(batch_size, max_source_length)` and, when the
        features have labels, `labels` and `decoder_input_ids` `(batch_size, max_target_length)`.
    """

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        if "labels" in batch and batch["labels"] is None:
            del batch["labels"]
        return batch
