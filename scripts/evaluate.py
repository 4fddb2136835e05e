#!/usr/bin/env python
"""Translate a test set with a saved hf_gru_attn model and print corpus sacreBLEU and chrF as JSON on stdout.

The JSON holds `bleu`, `chrf` (0..100), their sacreBLEU signatures (`bleu_signature`, `chrf_signature`),
`num_sentences` and the `dtype` the model decoded in (what `--dtype auto` chose). The scores are corpus-level and
computed on detokenised text (Post 2018, "A Call for Clarity in Reporting BLEU Scores"); report them together with
the signatures.

Example:
    python scripts/evaluate.py --model out/model --source_file test.de --reference_file test.en \
        --num_beams 5 --output_file test.hyp.en
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


# Python puts this script's folder first on sys.path, and this file is named like the `evaluate` library that
# hf_gru_attn.evaluation imports; drop the folder so that `import evaluate` finds the library, not this script.
_SCRIPT_DIR = Path(__file__).resolve().parent
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != _SCRIPT_DIR]

from transformers import HfArgumentParser  # noqa: E402

from hf_gru_attn.evaluation import compute_translation_metrics  # noqa: E402
from hf_gru_attn.translation import (  # noqa: E402
    DecodingArguments,
    check_output_path,
    load_translation_model,
    read_lines,
    translate,
    write_lines,
)


@dataclass
class EvaluateArguments:
    """The model, the test set and where to keep the translations."""

    model: str = field(metadata={"help": "Folder with the saved model and tokenizer (from save_pretrained)."})
    source_file: str = field(metadata={"help": "UTF-8 source sentences, one per line."})
    reference_file: str = field(metadata={"help": "UTF-8 reference translations, line-aligned with --source_file."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the translations to this file."})

    def __post_init__(self):
        check_output_path(
            "--output_file", self.output_file, source_file=self.source_file, reference_file=self.reference_file
        )


def main():
    """Parse the arguments, translate the source file and print the corpus scores as JSON."""
    parser = HfArgumentParser((EvaluateArguments, DecodingArguments))
    try:
        args, decoding = parser.parse_args_into_dataclasses()
        sources = read_lines(args.source_file)
        references = read_lines(args.reference_file)
        if len(sources) != len(references):
            raise ValueError(
                f"{args.source_file!r} has {len(sources)} lines but {args.reference_file!r} has {len(references)}; "
                "the files must be line-aligned (one reference per source sentence)."
            )
        model, tokenizer = load_translation_model(
            args.model, dtype=decoding.dtype, decoding_rows=decoding.batch_size * (decoding.num_beams or 1)
        )
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))

    hypotheses = translate(
        model, tokenizer, sources, batch_size=decoding.batch_size, show_progress=True, **decoding.generate_kwargs()
    )
    if args.output_file is not None:
        write_lines(hypotheses, args.output_file)
    results = {**compute_translation_metrics(hypotheses, references), "num_sentences": len(hypotheses),
               "dtype": str(model.dtype).removeprefix("torch.")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
