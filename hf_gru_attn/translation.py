"""Batch translation with a saved model: loading, line I/O, length-sorted batched `generate`, attention alignments.

Shared by `scripts/translate.py`, `scripts/evaluate.py` and anything else that turns sentences into translations, so
batching, ordering and generation settings are decided in one place.
"""

import itertools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .decoding_dtype import choose_decoding_dtype


logger = logging.get_logger(__name__)

# `--dtype` names and the torch dtypes they load the model in; `--dtype auto` is resolved by `choose_decoding_dtype`.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Characters that `str.splitlines` and many readers treat as line breaks; `write_lines` turns them into spaces.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass
class DecodingArguments:
    """Command-line decoding options shared by the translation scripts (parsed with `HfArgumentParser`)."""

    num_beams: int | None = field(
        default=None, metadata={"help": "Beam size; 1 is greedy search. Default: the model's generation_config."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Maximum tokens generated per sentence (EOS included). Default: the model's generation_config."
        },
    )
    batch_size: int = field(
        default=32, metadata={"help": "Sentences per generate() call; sentences are grouped by length."}
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Weights and compute dtype: float32, bfloat16 or float16 (bfloat16 is fast only on CPUs and GPUs "
            "with native bf16 matmuls), or auto: bfloat16 where a step's matmuls measure faster in it than in "
            "float32 on this machine (measured once, cached), else float32.",
            "choices": [*DTYPES, "auto"],
        },
    )

    use_shortlist: bool | None = field(
        default=None,
        metadata={
            "help": "Decode with the model's vocabulary shortlist (shortlist.safetensors, from "
            "scripts/build_shortlist.py): faster; scores over the candidate tokens only. Default: "
            "config.use_shortlist."
        },
    )

    def __post_init__(self):
        for name in ("num_beams", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}.")
        if self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"--dtype must be one of {[*DTYPES, 'auto']}, got {self.dtype!r}.")

    def generate_kwargs(self) -> dict[str, int | bool]:
        """Keyword arguments for `model.generate`: the options that were set; the model's defaults cover the rest."""
        names = ("num_beams", "max_new_tokens", "use_shortlist")
        return {name: value for name in names if (value := getattr(self, name)) is not None}


@dataclass
class AttentionAlignment:
    """
    Attention weights of one translated sentence (Bahdanau et al. 2015, Fig. 3).

    Attributes:
        source_tokens (`list[str]`): the `source_len` encoder input tokens, special tokens included.
        target_tokens (`list[str]`): the `target_len` generated tokens after the decoder start token, EOS included.
        weights (`np.ndarray` of shape `(target_len, source_len)`): row `t` is the attention distribution over the
            source when target token `t` was produced; each row sums to 1.
        translation (`str`): the decoded translation, special tokens removed.
    """

    source_tokens: list[str]
    target_tokens: list[str]
    weights: np.ndarray
    translation: str


def split_lines(text: str) -> list[str]:
    """
    Split text into lines on `\\n`, `\\r\\n` or `\\r` only (unlike `str.splitlines`, which also splits on form feeds,
    `\\x1c`..`\\x1e`, `\\u2028`, ... and would make line counts disagree with `wc -l` and with the reference file).

    Args:
        text (`str`): file contents.

    Returns:
        `list[str]`: the lines without their terminators; a final terminator does not start an extra empty line.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def decode_lines(data: bytes, name: str, first_line: int = 1) -> list[str]:
    """
    Decode UTF-8 bytes (optional BOM) and split them with [`split_lines`].

    Args:
        data (`bytes`): file or stdin contents.
        name (`str`): what the bytes are, for the error message (a path, or `"<stdin>"`).
        first_line (`int`, *optional*, defaults to 1): number of the first line, for the error message; a BOM is
            only skipped when it is 1 (the start of the text).

    Returns:
        `list[str]`: the lines without their terminators.

    Raises:
        ValueError: if the bytes are not valid UTF-8; the message gives the line and column of the first bad byte.
    """
    try:
        return split_lines(data.decode("utf-8-sig" if first_line == 1 else "utf-8"))
    except UnicodeDecodeError as err:
        before = err.object[: err.start]  # the codec reports positions after the BOM, in `err.object`
        line = split_lines(before.decode("utf-8") + "x")  # + "x": a trailing line end starts the bad byte's line
        raise ValueError(
            f"{name}:{first_line - 1 + len(line)}: not valid UTF-8 (byte {err.object[err.start]:#04x} at column "
            f"{len(line[-1])}: {err.reason}); convert the text, e.g. with `iconv -f <its encoding> -t UTF-8`."
        ) from None


def iter_line_chunks(stream, name: str, chunk_lines: int = 10_000) -> Iterator[list[str]]:
    """
    Read a binary stream lazily as lists of about `chunk_lines` lines, decoded and split as by [`decode_lines`]
    (chunks end at a `\\n`, so a CRLF is never cut; error messages give line numbers in the whole stream).

    Args:
        stream (binary file object): e.g. `open(path, "rb")` or `sys.stdin.buffer`.
        name (`str`): what the stream is, for error messages.
        chunk_lines (`int`, *optional*, defaults to 10,000): `\\n`-terminated lines per chunk.
    """
    first_line = 1
    while raw := list(itertools.islice(stream, chunk_lines)):
        lines = decode_lines(b"".join(raw), name, first_line)
        first_line += len(lines)
        yield lines


def check_output_path(flag: str, path: str | None, **inputs: str | None) -> None:
    """
    Checks an output path given on the command line before anything is read or written.

    Args:
        flag (`str`): the output's flag, for the message (e.g. `"--output_file"`).
        path (`str`, *optional*): the output path; `None` (stdout, or no such output) passes.
        **inputs (`str`, *optional*): the input files by flag name (e.g. `input_file=...`); `None` values are skipped.

    Raises:
        ValueError: if the folder of `path` does not exist, or `path` is one of the input files (writing it would
            destroy the input).
    """
    if path is None:
        return
    target = Path(path)
    if not target.resolve().parent.is_dir():
        raise ValueError(f"{flag} {path!r}: folder {str(target.parent)!r} does not exist; create it.")
    for name, source in inputs.items():
        if source is not None and (target.resolve() == Path(source).resolve() or (
            target.exists() and Path(source).exists() and os.path.samefile(target, source)
        )):
            raise ValueError(f"{flag} {path!r} is the --{name} file: writing it would destroy the input; choose "
                             "another output file.")


def read_lines(path: str | os.PathLike) -> list[str]:
    """
    Read a UTF-8 text file (optional BOM, LF/CRLF/CR line ends) as a list of lines.

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `list[str]`: one string per line, without line terminators.

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ValueError: if the file is not valid UTF-8 (the message names the line, see [`decode_lines`]).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file {str(path)!r} does not exist or is not a file; check the path.")
    return decode_lines(path.read_bytes(), str(path))


def write_lines(lines: Sequence[str], path=None) -> None:
    """
    Write strings as UTF-8 lines (`\\n`-terminated) to `path`, or to stdout when `path` is `None`.

    Line breaks inside a string (`\\r`, and the other characters `str.splitlines` splits on, such as `\\x0c` and
    `\\u2028`) are replaced by spaces, so that each string is exactly one output line for any reader.

    Args:
        lines (`Sequence[str]`): the lines.
        path (`str` or `os.PathLike`, *optional*): output file (created or overwritten); `None` means stdout; an
            open binary file object is appended to.
    """
    text = "".join(_LINE_BREAKS.sub(" ", line) + "\n" for line in lines)
    if path is None or hasattr(path, "write"):
        stream = sys.stdout.buffer if path is None else path
        stream.write(text.encode("utf-8"))
        stream.flush()
    else:
        Path(path).write_text(text, encoding="utf-8")


def load_translation_model(
    model_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    decoding_rows: int = 32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """
    Load a saved model and its tokenizer with the Auto classes, in eval mode.

    Args:
        model_dir (`str` or `os.PathLike`): folder written by `model.save_pretrained` and `tokenizer.save_pretrained`
            (e.g. by `scripts/train.py`).
        device (`str` or `torch.device`, *optional*): where to put the model; default CUDA when available, else CPU.
        dtype (`torch.dtype` or `str`, *optional*, defaults to `torch.float32`): dtype of the weights, and so of
            `generate()`'s computation (`from_pretrained(..., dtype=...)`): a `torch.dtype`, a name in `DTYPES`, or
            `"auto"` for [`~hf_gru_attn.decoding_dtype.choose_decoding_dtype`]'s measured choice on `device`.
        decoding_rows (`int`, *optional*, defaults to 32): decoder rows per `generate()` step (batch size x beams),
            the shapes `"auto"` measures at.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: `(model, tokenizer)`.

    Raises:
        FileNotFoundError: if `model_dir` is not a folder, or lacks `config.json` or the tokenizer files.
        ValueError: if `config.json` is invalid (the message names the field), the weights file is truncated or
            damaged, weights are missing or of other shapes than the config says, or the tokenizer does not belong
            to the model (more tokens than the model's vocabulary, or other pad/EOS ids).
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Model folder {str(path)!r} does not exist. Pass the folder written by `save_pretrained` (for example "
            "the output_dir of scripts/train.py); it must hold config.json, the weights and the tokenizer files."
        )
    for required, hint in (
        ("config.json", "model.save_pretrained"),
        ("tokenizer_config.json", "tokenizer.save_pretrained"),
    ):
        if not (path / required).is_file():
            raise FileNotFoundError(f"{str(path)!r} has no {required}; save it there with `{hint}({str(path)!r})`.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be a torch.dtype or one of {[*DTYPES, 'auto']}, got {dtype!r}.")
        dtype = DTYPES[dtype]
    try:
        model, loading_info = AutoModelForSeq2SeqLM.from_pretrained(
            path, output_loading_info=True, dtype=torch.float32 if dtype == "auto" else dtype
        )
    except (SafetensorError, RuntimeError, OSError) as err:  # truncated/garbled file, shape mismatch, unreadable
        raise ValueError(
            f"Cannot load the model weights in {str(path)!r}: {err}. The weights file is damaged or incomplete (for "
            "example an interrupted download or copy), or does not match config.json; save or copy the model again."
        ) from None
    if loading_info["missing_keys"]:
        raise ValueError(
            f"The weights in {str(path)!r} lack {sorted(loading_info['missing_keys'])}: they are not this model's "
            "weights (or the file is incomplete); save or copy the model again."
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    check_tokenizer_matches_model(tokenizer, model.config, str(path))
    if dtype == "auto":
        dtype = choose_decoding_dtype(model.config, device, rows=decoding_rows)
    return model.to(device, dtype).eval(), tokenizer


def check_tokenizer_matches_model(tokenizer: PreTrainedTokenizerBase, config, where: str) -> None:
    """
    Raise `ValueError` if `tokenizer` cannot be the model's: it has more tokens than the model's (source or target)
    vocabulary, or its pad or EOS id differs from the config's. A tokenizer with fewer tokens is accepted (the
    vocabulary may have been padded).
    """
    sizes = [getattr(config, name, None) for name in ("vocab_size", "decoder_vocab_size")]
    model_size = min(size for size in sizes if size is not None)
    if len(tokenizer) > model_size:
        raise ValueError(
            f"The tokenizer in {where!r} has {len(tokenizer)} tokens but the model's vocabulary has {model_size}: "
            "they do not belong together. Save the model's own tokenizer next to it."
        )
    for name in ("pad_token_id", "eos_token_id"):
        tokenizer_id, model_id = getattr(tokenizer, name), getattr(config, name, None)
        if tokenizer_id is not None and model_id is not None and tokenizer_id != model_id:
            raise ValueError(
                f"The tokenizer in {where!r} has {name}={tokenizer_id} but the model's config has {model_id}: they do "
                "not belong together. Save the model's own tokenizer next to it."
            )


def source_length_limit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Most source tokens the model takes: `config.max_source_positions`, else the tokenizer's `model_max_length`
    unless that is unset (transformers' huge default), else `None`."""
    limit = getattr(model.config, "max_source_positions", None)
    if limit is None and tokenizer.model_max_length < 1_000_000:
        limit = tokenizer.model_max_length
    return limit


def translate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
    show_progress: bool = False,
    **generate_kwargs,
) -> list[str]:
    """
    Translate sentences in length-sorted batches and return the translations in input order.

    Sentences are tokenised once, sorted by token count (longest first, so each batch carries little padding and a
    too-large batch fails at once), padded per batch and passed to `model.generate`. Empty or whitespace-only texts
    are not sent to the model and give `""`. Sources longer than [`source_length_limit`] tokens are truncated to it
    (keeping the tokenizer's EOS, as training does), with one warning listing their positions (1-based) in `texts`.
    The model should be in eval mode (as `from_pretrained` leaves it).

    Args:
        model (`PreTrainedModel`): an encoder-decoder model with `generate`.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer (source and target side).
        texts (`Sequence[str]`): source sentences; leading/trailing whitespace is ignored.
        batch_size (`int`, *optional*, defaults to 32): sentences per `generate` call.
        show_progress (`bool`, *optional*, defaults to `False`): show a tqdm bar (on stderr), counting sentences.
        **generate_kwargs: passed to `model.generate` (e.g. `num_beams`, `max_new_tokens`).

    Returns:
        `list[str]`: `len(texts)` translations, special tokens removed; `result[i]` translates `texts[i]`.

    Raises:
        ValueError: if `batch_size < 1` or `num_return_sequences` is not 1 (one translation per input).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("translate() returns one translation per input; num_return_sequences must be 1.")
    translations = [""] * len(texts)
    nonempty = [i for i, text in enumerate(texts) if text.strip()]
    limit = source_length_limit(model, tokenizer)
    # max_length=limit + 1 tells the too-long sources apart without the tokenizer's own "indexing errors" warning.
    tokenize_kwargs = {} if limit is None else {"truncation": True, "max_length": limit + 1}
    input_ids = tokenizer([texts[i].strip() for i in nonempty], **tokenize_kwargs)["input_ids"] if nonempty else []
    too_long = [j for j, ids in enumerate(input_ids) if limit is not None and len(ids) > limit]
    if too_long:
        texts_too_long = [texts[nonempty[j]].strip() for j in too_long]
        for j, ids in zip(too_long, tokenizer(texts_too_long, truncation=True, max_length=limit)["input_ids"]):
            input_ids[j] = ids
        positions = ", ".join(str(nonempty[j] + 1) for j in too_long[:10]) + (", ..." if len(too_long) > 10 else "")
        logger.warning(
            f"{len(too_long)} source sentence(s) longer than {limit} tokens, the most this model takes, were "
            f"truncated to {limit} tokens: input line(s) {positions}."
        )
    order = sorted(range(len(nonempty)), key=lambda j: len(input_ids[j]), reverse=True)
    with tqdm(total=len(order), unit="sentence", disable=not show_progress, file=sys.stderr) as progress:
        for start in range(0, len(order), batch_size):
            batch_indices = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [input_ids[j] for j in batch_indices]}, return_tensors="pt")
            output_ids = model.generate(**batch.to(model.device), **generate_kwargs)
            decoded = tokenizer.batch_decode(output_ids, skip_special_tokens=True)
            for j, translation in zip(batch_indices, decoded):
                translations[nonempty[j]] = translation
            progress.update(len(batch_indices))
    return translations


def attention_alignment(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, **generate_kwargs
) -> AttentionAlignment:
    """
    Translate one sentence and return the cross-attention weights behind each generated token.

    Uses `generate(..., output_attentions=True, return_dict_in_generate=True)`, whose `cross_attentions` is a tuple
    over generation steps of tuples over layers of `(batch_size * num_beams, num_heads, 1, source_len)` tensors. The
    last layer is used, averaged over heads (the GRU model has one layer and one head). With beam search the row of
    each step is the beam the final hypothesis came from (`beam_indices`).

    Args:
        model (`PreTrainedModel`): an encoder-decoder model whose forward returns `cross_attentions`.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        text (`str`): the source sentence.
        **generate_kwargs: passed to `model.generate` (e.g. `num_beams`, `max_new_tokens`).

    Returns:
        [`AttentionAlignment`]: source tokens, target tokens, `(target_len, source_len)` weights and translation.

    Raises:
        ValueError: if `text` is empty or whitespace-only, or the model returned no cross-attentions.
    """
    if not text.strip():
        raise ValueError("Cannot align an empty sentence; give a sentence with at least one token.")
    batch = tokenizer([text.strip()], return_tensors="pt").to(model.device)
    output = model.generate(**batch, **generate_kwargs, output_attentions=True, return_dict_in_generate=True)
    if not output.cross_attentions:
        raise ValueError(f"{type(model).__name__}.generate returned no cross_attentions; cannot draw an alignment.")
    target_ids = output.sequences[0, 1:].tolist()  # drop the decoder start token
    if tokenizer.eos_token_id in target_ids:
        target_ids = target_ids[: target_ids.index(tokenizer.eos_token_id) + 1]
    beam_indices = getattr(output, "beam_indices", None)
    rows = []
    for step in range(len(target_ids)):
        row = 0 if beam_indices is None else int(beam_indices[0, step])
        last_layer = output.cross_attentions[step][-1]  # (batch_size * num_beams, num_heads, 1, source_len)
        rows.append(last_layer[row, :, -1, :].mean(dim=0))  # (source_len,)
    return AttentionAlignment(
        source_tokens=tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()),
        target_tokens=tokenizer.convert_ids_to_tokens(target_ids),
        weights=torch.stack(rows).float().cpu().numpy(),
        translation=tokenizer.decode(target_ids, skip_special_tokens=True),
    )
