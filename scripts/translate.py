#!/usr/bin/env python
"""Translate text with a saved hf_gru_attn model: stdin to stdout, or --input_file to --output_file.

One output line per input line, in input order (empty lines stay empty). Optionally draws the attention alignment of
the first non-empty sentence as in Bahdanau et al. (2015), "Neural Machine Translation by Jointly Learning to Align
and Translate", Fig. 3.

Example:
    python scripts/translate.py --model out/model --input_file test.de --output_file test.hyp.en --num_beams 5
    echo "ein kleiner test" | python scripts/translate.py --model out/model --plot_attention alignment.png
"""

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hf_gru_attn.translation import (
    AttentionAlignment,
    DecodingArguments,
    attention_alignment,
    check_output_path,
    iter_line_chunks,
    load_translation_model,
    translate,
    write_lines,
)


@dataclass
class TranslateArguments:
    """Where the model and the text come from and where the results go."""

    model: str = field(metadata={"help": "Folder with the saved model and tokenizer (from save_pretrained)."})
    input_file: str | None = field(
        default=None, metadata={"help": "UTF-8 source text, one sentence per line. Default: stdin."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the translations. Default: stdout."}
    )
    plot_attention: str | None = field(
        default=None,
        metadata={"help": "PNG file: draw the attention alignment of the first non-empty input sentence."},
    )

    def __post_init__(self):
        for name in ("output_file", "plot_attention"):
            check_output_path(f"--{name}", getattr(self, name), input_file=self.input_file)


def plot_attention(alignment: AttentionAlignment, path: str) -> None:
    """
    Save an attention alignment as a grey-scale heat-map (0 black, 1 white), source tokens along the top, target
    tokens down the side, as in Bahdanau et al. (2015), Fig. 3.

    Args:
        alignment (`AttentionAlignment`): weights of shape `(target_len, source_len)` and the token labels.
        path (`str`): output image file (PNG).
    """
    num_target, num_source = alignment.weights.shape
    figure = Figure(figsize=(max(4.0, 0.45 * num_source + 1.5), max(4.0, 0.45 * num_target + 1.5)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(alignment.weights, cmap="gray", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(num_source), alignment.source_tokens, rotation=90)
    axes.set_yticks(range(num_target), alignment.target_tokens)
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.savefig(path, bbox_inches="tight", dpi=150)


def main():
    """Parse the arguments, translate the input lines and write one output line per input line."""
    parser = HfArgumentParser((TranslateArguments, DecodingArguments))
    try:
        args, decoding = parser.parse_args_into_dataclasses()
        if args.input_file is not None:
            if not Path(args.input_file).is_file():
                raise FileNotFoundError(f"Input file {args.input_file!r} does not exist or is not a file.")
            with open(args.input_file, "rb") as source:  # check the whole file before writing anything
                num_lines = sum(len(lines) for lines in iter_line_chunks(source, args.input_file))
        model, tokenizer = load_translation_model(
            args.model, dtype=decoding.dtype, decoding_rows=decoding.batch_size * (decoding.num_beams or 1)
        )
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))

    # Stream: translate and write chunk by chunk, so that memory does not grow with the input.
    first = None
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(args.input_file, "rb")) if args.input_file else sys.stdin.buffer
        output = stack.enter_context(open(args.output_file, "wb")) if args.output_file else None
        progress = stack.enter_context(
            tqdm(total=num_lines if args.input_file else None, unit="sentence", file=sys.stderr,
                 disable=args.input_file is None)
        )
        try:
            for lines in iter_line_chunks(source, args.input_file or "<stdin>"):
                write_lines(
                    translate(model, tokenizer, lines, batch_size=decoding.batch_size, **decoding.generate_kwargs()),
                    output,
                )
                first = first if first is not None else next((line for line in lines if line.strip()), None)
                progress.update(len(lines))
        except ValueError as err:  # invalid UTF-8 on stdin: the lines before its chunk were translated and written
            parser.error(str(err))

    if args.plot_attention is not None:
        if first is None:
            parser.error("--plot_attention needs at least one non-empty input line.")
        plot_attention(attention_alignment(model, tokenizer, first, **decoding.generate_kwargs()), args.plot_attention)


if __name__ == "__main__":
    main()
