#!/usr/bin/env python
"""Train the joint subword tokenizer (`hf_gru_attn.tokenization.train_tokenizer`) and save it with `save_pretrained`.

Without `--train_files` it trains on the bundled Multi30k training split, both languages (`data/multi30k/train.de`,
`data/multi30k/train.en`). The output folder loads with `AutoTokenizer.from_pretrained`.

Example:
    python scripts/train_tokenizer.py --output_dir out/tokenizer --vocab_size 8000 --model bpe
    python scripts/train_tokenizer.py --train_files src-train.txt tgt-train.txt --output_dir out/tok --model unigram
"""

import sys
import time
from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser

from hf_gru_attn.data import BUNDLED_MULTI30K_DIR
from hf_gru_attn.tokenization import train_tokenizer
from hf_gru_attn.training import check_empty_output_dir


@dataclass
class TokenizerArguments:
    """Training text, subword model and where the tokenizer goes."""

    output_dir: str = field(metadata={"help": "Folder for tokenizer.json and tokenizer_config.json."})
    train_files: list[str] | None = field(
        default=None,
        metadata={"help": "Text files, one sentence per line, all languages (default: bundled Multi30k train.de/en)."},
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size including the 4 special tokens."})
    model: Literal["bpe", "unigram"] = field(default="bpe", metadata={"help": "Subword model."})
    model_max_length: int = field(default=256, metadata={"help": "Maximum sequence length in tokens."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})

    def __post_init__(self):
        if self.train_files is None:
            self.train_files = [str(BUNDLED_MULTI30K_DIR / "train.de"), str(BUNDLED_MULTI30K_DIR / "train.en")]
        check_empty_output_dir(self.output_dir, self.overwrite_output_dir)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, train, save; returns the exit status (errors are printed, status 1)."""
    parser = HfArgumentParser(TokenizerArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        start = time.perf_counter()
        tokenizer = train_tokenizer(
            args.train_files, vocab_size=args.vocab_size, model=args.model, model_max_length=args.model_max_length
        )
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    tokenizer.save_pretrained(args.output_dir)
    print(f"Wrote {args.output_dir}: {args.model} tokenizer, {len(tokenizer)} tokens, trained in {seconds:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
