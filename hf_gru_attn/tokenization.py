"""Joint source/target subword tokenizer (BPE or Unigram) trained with 🤗 tokenizers and wrapped for transformers.

One vocabulary is shared by the source and the target language (like Marian/fairseq joint BPE), so a single
`PreTrainedTokenizerFast` serves `tokenizer(src, text_target=tgt)`, `DataCollatorForSeq2Seq` and decoding. Separate
vocabularies would need two tokenizers and the decoder-side vocabulary in the model config; they are not provided.
"""

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<s>", "</s>", "<unk>"
# The trainers put special tokens first, in this order, so their ids are fixed: <pad>=0, <s>=1, </s>=2, <unk>=3.
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN]


def _training_files(files_or_iterator: str | os.PathLike | Iterable) -> list[str] | None:
    """Return the training file paths if `files_or_iterator` names files, else `None` (it is an iterator of text).

    A `str`/`os.PathLike` is one file; a `list`/`tuple` of them is several files. Raises `FileNotFoundError` for a
    path that is not a file.
    """
    if isinstance(files_or_iterator, (str, os.PathLike)):
        paths = [files_or_iterator]
    elif isinstance(files_or_iterator, (list, tuple)) and all(
        isinstance(item, (str, os.PathLike)) for item in files_or_iterator
    ):
        paths = list(files_or_iterator)
    else:
        return None
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"Tokenizer training file not found: {path!s}. A str, path, list or tuple is read as file paths; "
                "pass an iterator of sentences (e.g. `iter(sentences)`) to train on in-memory text."
            )
    return [str(path) for path in paths]


def train_tokenizer(
    files_or_iterator: str | os.PathLike | Iterable[str | os.PathLike] | Iterator[str],
    vocab_size: int = 8000,
    model: str = "bpe",
    model_max_length: int = 256,
) -> PreTrainedTokenizerFast:
    """Train a joint subword tokenizer on both languages and wrap it as a transformers fast tokenizer.

    Pipeline (🤗 tokenizers): NFKC normaliser, then deletion of literal special-token strings
    (`<pad>`, `<s>`, `</s>`, `<unk>`, with the whitespace before them) → `Metaspace` pre-tokenizer (spaces become
    "▁", so `decode` restores spaces, punctuation and case exactly for NFKC-normalised text) → BPE (Sennrich et al.
    2016, arXiv:1508.07909) or Unigram LM (Kudo 2018, arXiv:1804.10959) → post-processor appending `</s>`
    exactly once → `Metaspace` decoder.

    - Special tokens have fixed ids `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3. `<s>` is never added to inputs; it is
      the decoder start token.
    - Characters not seen in training map to `<unk>` (no byte fallback); BPE fuses a run of unknown characters into
      one `<unk>`. All ids are `< len(tokenizer)`.
    - Special-token strings are never read from the text (`split_special_tokens=True` plus the normaliser deletion
      above), so `tokenizer("hello </s>")` ends with a single `</s>` and the ids 0-3 only come from the
      post-processor and from padding (BL-28). With Unigram this deletion is what keeps the model from emitting
      the special pieces, which are ordinary entries of its vocabulary.
    - `padding_side="right"`, `truncation_side="right"`, `model_max_length` set; truncation keeps the final `</s>`
      within `max_length`. `model_input_names` is `["input_ids", "attention_mask"]` (no `token_type_ids`).

    Args:
        files_or_iterator (`str`, `os.PathLike`, `list`/`tuple` of those, or an iterator of `str`):
            Training text, one sentence per line: a file, a list/tuple of files (e.g. `["train.de", "train.en"]`
            for a joint vocabulary), or any other iterable of sentences (e.g. `iter(lines)`, a generator). A list of
            strings is always read as file paths.
        vocab_size (`int`, *optional*, defaults to 8000):
            Target vocabulary size including the 4 special tokens. BPE stops earlier when no pair is left to merge
            and Unigram may end slightly below it, so check `len(tokenizer)`.
        model (`str`, *optional*, defaults to `"bpe"`): `"bpe"` or `"unigram"`.
        model_max_length (`int`, *optional*, defaults to 256): Maximum sequence length (tokens, EOS included).

    Returns:
        `transformers.PreTrainedTokenizerFast`: saves with `save_pretrained(dir)` (`tokenizer.json`,
        `tokenizer_config.json`) and reloads with `AutoTokenizer.from_pretrained(dir)` with identical ids.

    Raises:
        ValueError: `model` is not `"bpe"`/`"unigram"`, or `vocab_size` leaves no room beyond the special tokens.
        FileNotFoundError: a training file does not exist.
    """
    if model not in ("bpe", "unigram"):
        raise ValueError(f"model must be 'bpe' or 'unigram', got {model!r}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be larger than the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    files = _training_files(files_or_iterator)

    if model == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN, fuse_unk=True))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK_TOKEN, show_progress=False
        )
    literal_special_tokens = Regex(r"\s*(?:" + "|".join(SPECIAL_TOKENS) + ")")
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(literal_special_tokens, "")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    if files is None:
        tokenizer.train_from_iterator(files_or_iterator, trainer)
    else:
        tokenizer.train(files, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, tokenizer.token_to_id(EOS_TOKEN))]
    )

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
