#!/usr/bin/env python
"""Export a trained model to ONNX for decoding with ONNX Runtime (`hf_gru_attn.onnx_decoding`).

Writes `encoder.onnx` and `decoder_step.onnx` (one decoder step: state in, state out), the model's config and
generation config and its tokenizer into `--output_dir`, which then loads on its own:

    from transformers import AutoTokenizer
    from hf_gru_attn.onnx_decoding import GruAttnOnnxForConditionalGeneration
    model = GruAttnOnnxForConditionalGeneration.from_pretrained("out/onnx")
    tokenizer = AutoTokenizer.from_pretrained("out/onnx")

Needs `pip install "hf_gru_attn[onnx]"`.

Example:
    python scripts/export_onnx.py --model outputs/gru-attn-multi30k-de-en --output_dir outputs/onnx
"""

import sys
import time
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_gru_attn.onnx_export import export_onnx
from hf_gru_attn.training import check_empty_output_dir
from hf_gru_attn.translation import load_translation_model


@dataclass
class ExportArguments:
    """The model to export and where the graphs go."""

    model: str = field(metadata={"help": "Model folder (from scripts/train.py or save_pretrained), with tokenizer."})
    output_dir: str = field(metadata={"help": "Folder for the ONNX graphs, config and tokenizer."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})

    def __post_init__(self):
        check_empty_output_dir(self.output_dir, self.overwrite_output_dir)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the model, export; returns the exit status (errors are printed, status 1)."""
    parser = HfArgumentParser(ExportArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        model, tokenizer = load_translation_model(args.model, device="cpu")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    paths = export_onnx(model, args.output_dir, tokenizer=tokenizer)
    print(f"Wrote {', '.join(str(path) for path in paths)} and the config and tokenizer in "
          f"{time.perf_counter() - start:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
