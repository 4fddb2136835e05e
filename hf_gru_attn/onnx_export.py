"""Export of a [`GruAttnForConditionalGeneration`] to ONNX: the encoder and one decoder step (state in, state out).

The graphs are traced with the TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): it turns the
encoder's packed (bi)GRU into an ONNX `GRU` node with `sequence_lens`, and records of the model's input checks only
the path the example input takes. The dynamo exporter (`torch.export`) refuses both, as data-dependent control flow.
The example input is chosen so that the path recorded is right for all inputs: right-padded rows of unequal lengths
(the attention's padding bias), none longer than `config.max_source_positions` (the encoder graph gets the truncated
mask from [`truncated_attention_mask`] instead; the decoder step truncates in the graph, as the model does).

Needs the `onnx` package (`pip install "hf_gru_attn[onnx]"`).
"""

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .modeling_gru_attn import GruAttnCache, GruAttnEncoderOutput, GruAttnForConditionalGeneration


ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_step.onnx"
ONNX_FILES = (ENCODER_FILE, DECODER_FILE)
OPSET_VERSION = 17
# Config fields that shape the graphs; the fingerprint of a config is a hash of these.
ARCHITECTURE_FIELDS = (
    "vocab_size", "decoder_vocab_size", "embedding_size", "hidden_size", "encoder_hidden_size", "encoder_layers",
    "decoder_layers", "bidirectional_encoder", "attention_type", "attention_size", "decoder_init",
    "share_embeddings", "tie_word_embeddings", "max_source_positions", "pad_token_id", "bos_token_id",
    "eos_token_id", "decoder_start_token_id",
)


def config_fingerprint(config) -> str:
    """SHA-256 (hex) of the config fields that shape the exported graphs (`ARCHITECTURE_FIELDS`)."""
    fields = {name: getattr(config, name, None) for name in ARCHITECTURE_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's parameters and buffers (names, dtypes, shapes and bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class GruAttnEncoderForExport(nn.Module):
    """
    The traced encoder graph: source ids and mask to the encoder outputs, the attention keys and the decoder's
    initial state (batch-first, so that `generate()` can expand it for beams like the other encoder outputs).

    Inputs: `input_ids` `(batch_size, source_length)` int64, `attention_mask` `(batch_size, source_length)` int64
    (1 on real tokens, right-padded). Outputs: `last_hidden_state` `(batch_size, source_length,
    encoder_output_size)`, `keys` `(batch_size, source_length, key_size)`, `initial_state` `(batch_size,
    decoder_layers, hidden_size)`, all float32.
    """

    def __init__(self, model: GruAttnForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        encoder_outputs = self.model.get_encoder()(input_ids, attention_mask)
        decoder = self.model.get_decoder()
        keys = decoder.attention.project_keys(encoder_outputs.last_hidden_state)
        initial_state = decoder.initial_state(encoder_outputs.final_hidden_state).transpose(0, 1)
        return encoder_outputs.last_hidden_state, keys, initial_state


class GruAttnDecoderStepForExport(nn.Module):
    """
    The traced decoder-step graph: one target token per row and the decoder state to the next-token logits and the
    new state, through the model's own `forward` with a [`GruAttnCache`].

    Inputs: `decoder_input_ids` `(batch_size, 1)` int64, `hidden` `(decoder_layers, batch_size, hidden_size)`,
    `keys` `(batch_size, source_length, key_size)`, `encoder_hidden_states` `(batch_size, source_length,
    encoder_output_size)` float32, `attention_mask` `(batch_size, source_length)` int64. Outputs: `logits`
    `(batch_size, decoder_vocab_size)` and `new_hidden` `(decoder_layers, batch_size, hidden_size)`, float32.
    """

    def __init__(self, model: GruAttnForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, hidden, keys, encoder_hidden_states, attention_mask):
        outputs = self.model(
            decoder_input_ids=decoder_input_ids,
            encoder_outputs=GruAttnEncoderOutput(last_hidden_state=encoder_hidden_states),
            attention_mask=attention_mask,
            cache=GruAttnCache(hidden, keys, seq_length=1),
            use_cache=True,
        )
        return outputs.logits[:, -1], outputs.cache.hidden


def truncated_attention_mask(attention_mask: torch.Tensor, config) -> torch.Tensor:
    """
    `attention_mask` `(batch_size, source_length)` with each row's real tokens after the first
    `config.max_source_positions` set to 0, the source the PyTorch encoder reads when that limit is set (it truncates
    longer rows); unchanged when it is `None`. The encoder graph is traced without this path (its realignment
    of the tokens does not export) and gets the truncated mask instead.
    """
    if config.max_source_positions is None:
        return attention_mask
    return attention_mask * (attention_mask.cumsum(dim=1) <= config.max_source_positions).to(attention_mask.dtype)


def example_source(config) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded example `(input_ids, attention_mask)` of 3 rows of 5, 3 and 1 tokens, so that tracing records
    the attention's padding path."""
    lengths = [5, 3, 1]
    token = config.eos_token_id + 1 if config.eos_token_id + 1 < config.vocab_size else 0
    attention_mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.where(attention_mask.bool(), token, config.pad_token_id)
    input_ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = config.eos_token_id
    return input_ids, attention_mask


def export_onnx(model: GruAttnForConditionalGeneration, output_dir: str | Path, tokenizer=None) -> list[Path]:
    """
    Export `model` to `output_dir` as `encoder.onnx` and `decoder_step.onnx` (see [`GruAttnEncoderForExport`] and
    [`GruAttnDecoderStepForExport`] for their inputs and outputs; dynamic batch and source-length axes, opset 17),
    with its `config.json`, `generation_config.json` and, if given, the tokenizer, so that the folder loads on its
    own with `GruAttnOnnxForConditionalGeneration.from_pretrained` and `AutoTokenizer.from_pretrained`. Each graph's
    metadata holds the config fingerprint ([`config_fingerprint`]), the weights fingerprint and the vocabulary
    sizes, which `from_pretrained` checks. Files of these names in `output_dir` are replaced.

    Args:
        model ([`GruAttnForConditionalGeneration`]): a float32 model on the CPU.
        output_dir (`str` or `Path`): folder to write to (created if missing).
        tokenizer (`PreTrainedTokenizerBase`, *optional*): saved with `save_pretrained` next to the graphs.

    Returns:
        `list[Path]`: the two graph files.

    Raises:
        ValueError: if the model is not float32 on the CPU.
        ImportError: if the `onnx` package is not installed.
    """
    import onnx

    if model.dtype != torch.float32 or model.device.type != "cpu":
        raise ValueError(
            f"Export a float32 model on the CPU (this one is {model.dtype} on {model.device}); load it with "
            "dtype=torch.float32 and device='cpu'."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    config = model.config
    metadata = {
        "config_sha256": config_fingerprint(config),
        "weights_sha256": weights_fingerprint(model),
        "vocab_size": str(config.vocab_size),
        "decoder_vocab_size": str(config.decoder_vocab_size),
    }

    input_ids, attention_mask = example_source(config)
    encoder = GruAttnEncoderForExport(model).eval()
    decoder_step = GruAttnDecoderStepForExport(model).eval()
    encoder_mask = truncated_attention_mask(attention_mask, config)
    with torch.no_grad():
        encoder_hidden_states, keys, initial_state = encoder(input_ids, encoder_mask)
    decoder_input_ids = torch.full((input_ids.shape[0], 1), config.decoder_start_token_id)
    hidden = initial_state.transpose(0, 1).contiguous()
    batch, source = {0: "batch_size"}, {0: "batch_size", 1: "source_length"}
    graphs = {
        ENCODER_FILE: (
            encoder, (input_ids, encoder_mask), {"input_ids": source, "attention_mask": source},
            {"last_hidden_state": source, "keys": source, "initial_state": batch},
        ),
        DECODER_FILE: (
            decoder_step, (decoder_input_ids, hidden, keys, encoder_hidden_states, attention_mask),
            {"decoder_input_ids": batch, "hidden": {1: "batch_size"}, "keys": source,
             "encoder_hidden_states": source, "attention_mask": source},
            {"logits": batch, "new_hidden": {1: "batch_size"}},
        ),
    }
    paths = []
    for name, (module, args, inputs, outputs) in graphs.items():
        path = output_dir / name
        with torch.no_grad(), warnings.catch_warnings():
            # The model's input checks branch on tensor values; the trace keeps the path of the (valid) example.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # A false alarm here: the GRU's initial state is built from the input's (dynamic) batch size.
            warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=list(inputs), output_names=list(outputs),
                dynamic_axes={**inputs, **outputs}, opset_version=OPSET_VERSION,
            )
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, metadata)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(path))
        paths.append(path)
    config.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return paths
