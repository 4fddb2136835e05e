#!/usr/bin/env python
"""
Average the weights of several checkpoints of one training run into a new model folder, as fairseq's
`scripts/average_checkpoints.py` (checkpoint averaging: Vaswani et al. 2017, section 6.1).

    python scripts/average_checkpoints.py --inputs RUN_DIR --last 5 --output_dir averaged
    python scripts/average_checkpoints.py --inputs RUN_DIR/checkpoint-800 RUN_DIR/checkpoint-900 --output_dir averaged

With `--last K` the single input is a `scripts/train.py` output folder and the K highest-step complete
`checkpoint-<step>` folders in it are averaged; without it the inputs are the checkpoint folders themselves. The
output folder gets a complete model (weights, config, generation config, remote code, and the tokenizer when the
checkpoints hold one) that loads with `AutoModelForSeq2SeqLM.from_pretrained`. A non-empty output folder is not
written into without `--overwrite_output_dir`.
"""

import argparse
import logging
import sys

from hf_gru_attn.averaging import last_checkpoints, save_averaged_model
from hf_gru_attn.training import check_empty_output_dir


logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring. Raises `ValueError` on bad input (the message says why)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--inputs", nargs="+", required=True,
                        help="Checkpoint folders, or with --last one training output folder.")
    parser.add_argument("--last", type=int, default=None,
                        help="Average the LAST highest-step checkpoint-<step> folders of the one input folder.")
    parser.add_argument("--output_dir", required=True, help="Folder for the averaged model.")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Write into a non-empty --output_dir.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)

    check_empty_output_dir(args.output_dir, args.overwrite_output_dir)
    if args.last is not None:
        if len(args.inputs) != 1:
            raise ValueError(f"--last takes one training output folder as --inputs, got {len(args.inputs)}.")
        checkpoints = last_checkpoints(args.inputs[0], args.last)
    else:
        checkpoints = args.inputs
    save_averaged_model(checkpoints, args.output_dir)
    logger.info(f"Averaged {len(checkpoints)} checkpoints ({', '.join(checkpoints)}) into {args.output_dir}.")


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        sys.exit(f"average_checkpoints.py: error: {error}")
