#!/usr/bin/env python
"""Convert a checkpoint of the seed's sample model (`scripts/seed_reference.py`) into a Hugging Face model folder.

The checkpoint is the seed `Seq2Seq` model's `state_dict` saved with `torch.save`. The output folder (config.json,
generation_config.json, model.safetensors and the model code) loads with `AutoModelForSeq2SeqLM.from_pretrained`,
and its teacher-forced logits equal the seed model's (see `hf_gru_attn.convert_seed`).

Example:
    python scripts/convert_seed_checkpoint.py --checkpoint seed.pt --output_dir out/seed-hf --eos_token_id 2
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_gru_attn.convert_seed import convert_seed_state_dict
from hf_gru_attn.training import check_empty_output_dir


@dataclass
class ConvertArguments:
    """Where the seed checkpoint is, where the HF model goes, and the special token ids (the seed has none)."""

    checkpoint: str = field(metadata={"help": "Seed state_dict saved with torch.save (e.g. seed.pt)."})
    output_dir: str = field(metadata={"help": "Folder for the converted model (created if missing)."})
    pad_token_id: int = field(default=0, metadata={"help": "Padding token id."})
    bos_token_id: int = field(default=1, metadata={"help": "Start token id (also the decoder start id)."})
    eos_token_id: int = field(default=2, metadata={"help": "End-of-sequence token id."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})

    def __post_init__(self):
        if not Path(self.checkpoint).is_file():
            raise ValueError(f"--checkpoint {self.checkpoint!r} is not a file.")
        check_empty_output_dir(self.output_dir, self.overwrite_output_dir)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, convert, save; returns the exit status (errors are printed, status 1)."""
    parser = HfArgumentParser(ConvertArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        try:
            state_dict = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        except Exception as error:  # the unpickler raises many types (UnpicklingError, KeyError, EOFError, ...)
            raise ValueError(f"Cannot read {args.checkpoint!r} as a torch state_dict: {error}") from error
        if not isinstance(state_dict, dict):
            raise ValueError(f"{args.checkpoint!r} holds a {type(state_dict).__name__}, not a state_dict.")
        model = convert_seed_state_dict(state_dict, args.pad_token_id, args.bos_token_id, args.eos_token_id)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model.save_pretrained(args.output_dir)
    config = model.config
    print(
        f"Wrote {args.output_dir}: vocab {config.vocab_size}/{config.decoder_vocab_size}, "
        f"embedding {config.embedding_size}, hidden {config.hidden_size}, "
        f"{model.num_parameters()} parameters."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
