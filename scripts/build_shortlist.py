#!/usr/bin/env python
"""Build the vocabulary shortlist of a saved model from its training data and save it next to the weights.

Counts source/target token co-occurrence with the model's own tokenizer (`hf_gru_attn.shortlist.build_shortlist`)
and writes `MODEL/shortlist.safetensors`, which `from_pretrained` loads, `save_pretrained` writes again and
`push_to_hub` uploads. Decode with it through `generate(..., use_shortlist=True)`, `--use_shortlist true` of
`scripts/translate.py`/`scripts/evaluate.py`, or `config.use_shortlist`. Without `--train_file` it counts on the
bundled Multi30k training split and reports on its validation split: the mean candidate-set size per batch and the
share of reference target tokens that are candidates (a reference token outside the set cannot be produced).

Example:
    python scripts/build_shortlist.py --model out/model --top_k 100 --num_frequent 100
    python scripts/build_shortlist.py --model out/model --train_file data/train --validation_file data/val
"""

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser

from hf_gru_attn.data import BUNDLED_MULTI30K_DIR, load_parallel_dataset
from hf_gru_attn.modeling_gru_attn import SHORTLIST_NAME, GruAttnShortlist
from hf_gru_attn.shortlist import build_shortlist


@dataclass
class ShortlistArguments:
    """The model, the data to count on and the table's sizes."""

    model: str = field(metadata={"help": "Folder with the saved model and tokenizer (from save_pretrained)."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data in the forms scripts/train.py takes (JSON lines, TSV, or a prefix such as "
                  "data/train for data/train.<lang>). Default: the bundled Multi30k train split."},
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Data to report candidate-set sizes and reference coverage on (same forms). Default: the "
                  "bundled Multi30k val split when --train_file is not given, else none."},
    )
    source_lang: str = field(default="de", metadata={"help": "Source language code."})
    target_lang: str = field(default="en", metadata={"help": "Target language code."})
    top_k: int = field(default=10, metadata={"help": "Candidate target tokens kept per source token."})
    num_frequent: int = field(default=100, metadata={"help": "Most frequent target tokens, always candidates."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Count on the first N pairs only."})
    report_batch_sizes: list[int] = field(
        default_factory=lambda: [32, 64], metadata={"help": "Batch sizes of the validation report."}
    )
    overwrite: bool = field(default=False, metadata={"help": f"Replace an existing {SHORTLIST_NAME}."})

    def __post_init__(self):
        if not (Path(self.model) / "config.json").is_file():
            raise FileNotFoundError(f"{self.model!r} has no config.json: pass a folder written by save_pretrained.")
        if (Path(self.model) / SHORTLIST_NAME).exists() and not self.overwrite:
            raise ValueError(f"{Path(self.model) / SHORTLIST_NAME} exists; pass --overwrite to replace it.")
        if self.train_file is None and self.validation_file is None:
            self.validation_file = str(BUNDLED_MULTI30K_DIR / "val")
        if self.train_file is None:
            self.train_file = str(BUNDLED_MULTI30K_DIR / "train")
        for name in ("top_k", "num_frequent"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")


def tokenize_pairs(tokenizer, dataset, source_lang: str, target_lang: str) -> tuple[list, list]:
    """Source and target token ids of every pair of a `translation` dataset, as training tokenizes them."""
    sources = [pair[source_lang] for pair in dataset["translation"]]
    targets = [pair[target_lang] for pair in dataset["translation"]]
    return tokenizer(sources)["input_ids"], tokenizer(text_target=targets)["input_ids"]


def coverage_report(shortlist: GruAttnShortlist, source_ids, target_ids, batch_size: int, always_ids) -> dict:
    """Mean candidate-set size per batch of `batch_size` consecutive pairs, and the share of reference tokens in it."""
    sizes, covered, total = [], 0, 0
    for start in range(0, len(source_ids), batch_size):
        sources = [torch.tensor(ids) for ids in source_ids[start : start + batch_size]]
        candidates = shortlist.candidate_ids(torch.cat(sources)[None], always_ids=always_ids)
        references = torch.cat([torch.tensor(ids) for ids in target_ids[start : start + batch_size]])
        sizes.append(len(candidates))
        covered += int(torch.isin(references, candidates).sum())
        total += len(references)
    return {"mean_candidates": statistics.mean(sizes), "reference_coverage_pct": 100 * covered / total}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, count, save the table and print the report; returns the exit status."""
    parser = HfArgumentParser(ShortlistArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        config = AutoConfig.from_pretrained(args.model, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        data = load_parallel_dataset(
            args.source_lang, args.target_lang, train_file=args.train_file, validation_file=args.validation_file
        )
        train = data["train"]
        if args.max_train_samples is not None:
            train = train.select(range(min(args.max_train_samples, len(train))))
        source_ids, target_ids = tokenize_pairs(tokenizer, train, args.source_lang, args.target_lang)
        shortlist = build_shortlist(
            source_ids, target_ids, config.vocab_size, config.decoder_vocab_size, top_k=args.top_k,
            num_frequent=args.num_frequent, special_ids=tokenizer.all_special_ids,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    path = Path(args.model) / SHORTLIST_NAME
    shortlist.save(path)
    print(f"Wrote {path}: top {args.top_k} targets per source token and {len(shortlist.frequent_targets)} frequent "
          f"and special targets, counted on {len(source_ids)} pairs of {args.train_file}.")
    if "validation" in data:
        valid_sources, valid_targets = tokenize_pairs(
            tokenizer, data["validation"], args.source_lang, args.target_lang
        )
        for batch_size in args.report_batch_sizes:
            report = coverage_report(shortlist, valid_sources, valid_targets, batch_size, tokenizer.all_special_ids)
            print(f"{args.validation_file}, batches of {batch_size}: {report['mean_candidates']:.0f} candidates of "
                  f"{config.decoder_vocab_size} on average, {report['reference_coverage_pct']:.2f}% of the reference "
                  "tokens among them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
