"""Decoding with ONNX Runtime: the graphs written by [`export_onnx`] behind transformers' `generate()`.

[`GruAttnOnnxForConditionalGeneration`] has no weights of its own: its encoder and its `forward` (one decoder step)
run the two ONNX Runtime sessions, and the search, beam search with the model's generation config (length penalty,
early stopping, max length, EOS and padding) or any other, is transformers' `GenerationMixin.generate`, the same code
that decodes the PyTorch model (the approach of Optimum's `ORTModelForSeq2SeqLM`). Plain greedy search, the argmax
loop that transformers runs when no logits processor or other option is set, runs in a loop of its own on NumPy
arrays, without transformers' per-step work (1.2x faster at batch 32-64, seed sizes, one AVX-512 core). Tokens equal
the PyTorch model's up to the rounding differences of the two runtimes' kernels.

Needs `onnxruntime` (`pip install "hf_gru_attn[onnx]"`).
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .configuration_gru_attn import GruAttnConfig
from .modeling_gru_attn import GruAttnCache, GruAttnPreTrainedModel, _check_token_ids
from .onnx_export import DECODER_FILE, ENCODER_FILE, ONNX_FILES, config_fingerprint, truncated_attention_mask


# Generation settings under which greedy search is a plain argmax loop (see `GruAttnOnnxForConditionalGeneration`).
PLAIN_GREEDY_SETTINGS = {
    "max_length", "max_new_tokens", "num_beams", "do_sample", "early_stopping", "length_penalty", "use_cache",
    "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id", "eos_token_id",
    "decoder_start_token_id", "_from_model_config", "transformers_version",
}


@dataclass
class GruAttnOnnxEncoderOutput(BaseModelOutput):
    r"""
    Output of the ONNX encoder; every tensor is batch-first, so that `generate()` can expand it for beams.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, source_length, encoder_output_size)`):
            encoder outputs, zero on padding positions.
        keys (`torch.FloatTensor` of shape `(batch_size, source_length, key_size)`): the attention keys
            (`GruAttnAttention.project_keys`).
        initial_state (`torch.FloatTensor` of shape `(batch_size, decoder_layers, hidden_size)`): the decoder's
            first state (`GruAttnDecoder.initial_state`).
    """

    keys: torch.FloatTensor | None = None
    initial_state: torch.FloatTensor | None = None


def _session(path: Path, session_options):
    """An ONNX Runtime CPU session for `path`, or `ValueError` when the file is not a readable ONNX model."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise ValueError(
            f"{str(path)!r} is not a readable ONNX model ({type(err).__name__}: {str(err)[:200]}); the file is "
            "damaged or incomplete. Export the model again with scripts/export_onnx.py."
        ) from None


class GruAttnOnnxEncoder(nn.Module):
    """The encoder session as the module that `generate()` calls once per batch (see [`GruAttnOnnxEncoderOutput`])."""

    main_input_name = "input_ids"

    def __init__(self, session, config: GruAttnConfig):
        super().__init__()
        self.session = session
        self.config = config

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`): source ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*): 1 on real tokens,
                0 on padding, which must be on the right. `None` means no padding.
            kwargs: `generate()`'s other encoder arguments (`return_dict`, `output_attentions`, ...); ignored,
                except that hidden states or attentions cannot be returned.

        Returns:
            [`GruAttnOnnxEncoderOutput`].

        Raises:
            ValueError: on ids outside the vocabulary, a mask of another shape, a row without real tokens, padding on
                the left, or `output_hidden_states=True` / `output_attentions=True`.
        """
        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
            raise ValueError("The ONNX encoder returns neither hidden states nor attentions; use the PyTorch model.")
        _check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but `input_ids` has "
                f"{tuple(input_ids.shape)}."
            )
        mask = attention_mask.long()
        if (mask[:, 0] == 0).any() or (mask[:, 1:] > mask[:, :-1]).any():
            raise ValueError(
                "The ONNX encoder takes right-padded sources of at least one token only (every row of "
                "`attention_mask` ones, then zeros); pad on the right (`tokenizer.padding_side = 'right'`, the "
                "default)."
            )
        encoder_mask = truncated_attention_mask(mask, self.config).numpy()
        hidden, keys, initial_state = self.session.run(
            None, {"input_ids": input_ids.long().numpy(), "attention_mask": encoder_mask}
        )
        return GruAttnOnnxEncoderOutput(
            last_hidden_state=torch.from_numpy(hidden), keys=torch.from_numpy(keys),
            initial_state=torch.from_numpy(initial_state),
        )


class GruAttnOnnxForConditionalGeneration(GruAttnPreTrainedModel, GenerationMixin):
    """
    A [`GruAttnForConditionalGeneration`] exported to ONNX (`scripts/export_onnx.py`), decoded on ONNX Runtime's
    CPU provider with `generate()`: greedy and beam search give the PyTorch model's tokens; sampling and the logits
    processors run too; `output_attentions`/`output_hidden_states` are refused. Load it with
    [`~GruAttnOnnxForConditionalGeneration.from_pretrained`]; it works with `hf_gru_attn.translation.translate`.
    It holds no weights: `save_pretrained` is refused (copy the folder instead).

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> model = GruAttnOnnxForConditionalGeneration.from_pretrained("outputs/onnx")  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained("outputs/onnx")  # doctest: +SKIP
    >>> model.generate(**tokenizer(["Zwei Hunde."], return_tensors="pt"), num_beams=5)  # doctest: +SKIP
    ```
    """

    def __init__(self, config: GruAttnConfig, encoder_session, decoder_session):
        super().__init__(config)
        self.encoder = GruAttnOnnxEncoder(encoder_session, config)
        self.decoder_session = decoder_session
        self.post_init()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @classmethod
    def from_pretrained(
        cls, onnx_dir: str | Path, config: GruAttnConfig | None = None, session_options=None
    ) -> "GruAttnOnnxForConditionalGeneration":
        """
        Load the graphs in `onnx_dir` (written by `scripts/export_onnx.py`) into ONNX Runtime sessions.

        Args:
            onnx_dir (`str` or `Path`): folder with `encoder.onnx`, `decoder_step.onnx`, `config.json` and (optional)
                `generation_config.json`.
            config ([`GruAttnConfig`], *optional*): the config to decode with, for example of the PyTorch model the
                graphs were exported from; default: `onnx_dir/config.json`. It must be the graphs' config.
            session_options (`onnxruntime.SessionOptions`, *optional*): default: as many intra-op threads as torch
                uses (`torch.get_num_threads()`), all graph optimisations.

        Returns:
            [`GruAttnOnnxForConditionalGeneration`].

        Raises:
            FileNotFoundError: if `onnx_dir` or one of its files is missing.
            ValueError: if a graph file is damaged, the two graphs come from different exports, or the config is not
                the one the graphs were exported with (another model's folder or config).
            ImportError: if `onnxruntime` is not installed.
        """
        import onnxruntime

        onnx_dir = Path(onnx_dir)
        if not onnx_dir.is_dir():
            raise FileNotFoundError(
                f"ONNX folder {str(onnx_dir)!r} does not exist; write it with `scripts/export_onnx.py --model DIR "
                "--output_dir OUT`."
            )
        for name in (*ONNX_FILES, *(() if config is not None else ("config.json",))):
            if not (onnx_dir / name).is_file():
                raise FileNotFoundError(
                    f"{str(onnx_dir)!r} has no {name}; export the model again with scripts/export_onnx.py."
                )
        if config is None:
            config = GruAttnConfig.from_pretrained(onnx_dir)
        if session_options is None:
            session_options = onnxruntime.SessionOptions()
            session_options.intra_op_num_threads = torch.get_num_threads()
        sessions = [_session(onnx_dir / name, session_options) for name in ONNX_FILES]
        metadata = [session.get_modelmeta().custom_metadata_map for session in sessions]
        expected = config_fingerprint(config)
        for name, meta in zip(ONNX_FILES, metadata):
            if meta.get("config_sha256") != expected:
                raise ValueError(
                    f"{str(onnx_dir / name)!r} was exported from a model with another config (vocabulary "
                    f"{meta.get('vocab_size', '?')}, this config's is {config.vocab_size}): it is another model's "
                    "graph. Export this model with scripts/export_onnx.py."
                )
        if metadata[0].get("weights_sha256") != metadata[1].get("weights_sha256"):
            raise ValueError(
                f"{ENCODER_FILE} and {DECODER_FILE} in {str(onnx_dir)!r} come from different exports (other weights); "
                "export the model again into an empty folder."
            )
        model = cls(config, *sessions)
        if (onnx_dir / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(onnx_dir)
        return model

    def get_encoder(self, modality: str | None = None) -> GruAttnOnnxEncoder:
        return self.encoder

    def save_pretrained(self, *args, **kwargs):
        """Refused: the model's weights are in its ONNX graphs, which `save_pretrained` would not write."""
        raise NotImplementedError(
            "An ONNX Runtime model is not saved with save_pretrained (its weights are in the .onnx files): copy its "
            "folder, or export the PyTorch model again with scripts/export_onnx.py."
        )

    def generate(self, input_ids: torch.LongTensor | None = None, generation_config=None, **kwargs):
        """
        `GenerationMixin.generate`, except that plain greedy search runs in [`greedy_search`]: one beam, no sampling,
        no keyword besides `attention_mask` and the generation settings, and no setting other than transformers'
        default values except the lengths, special token ids and options without effect on greedy search
        (`PLAIN_GREEDY_SETTINGS`). Both return the same tokens.
        """
        settings = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        model_kwargs = settings.update(**kwargs)
        # Settings other than transformers' defaults (a saved generation_config.json writes the defaults out too).
        defaults = GenerationConfig._get_default_generation_params()
        changed = {name for name, value in settings.to_diff_dict().items() if name not in defaults or
                   defaults[name] != value}
        plain = (
            input_ids is not None
            and set(model_kwargs) <= {"attention_mask"}
            and changed <= PLAIN_GREEDY_SETTINGS
            and settings.num_beams in (None, 1)
            and not (settings.do_sample or settings.output_attentions or settings.output_hidden_states)
        )
        if not plain:
            return super().generate(input_ids, generation_config=generation_config, **kwargs)
        max_length = settings.max_length if settings.max_new_tokens is None else settings.max_new_tokens + 1
        return self.greedy_search(input_ids, model_kwargs.get("attention_mask"), max_length, settings)

    def greedy_search(self, input_ids, attention_mask, max_length: int, settings: GenerationConfig) -> torch.Tensor:
        """
        Greedy search as transformers' `generate()` runs it without logits processors: from the decoder start token,
        append the argmax token of every row, the pad token once a row has emitted EOS, until every row has or the
        sequences are `max_length` long.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`), attention_mask (same shape,
                *optional*): right-padded sources, as for [`GruAttnOnnxEncoder`].
            max_length (`int`): longest output, decoder start token included.
            settings (`GenerationConfig`): gives `decoder_start_token_id` (else `bos_token_id`), `eos_token_id` (an
                id or a list) and `pad_token_id` (else the first EOS id).

        Returns:
            `torch.LongTensor` of shape `(batch_size, output_length)`, `output_length <= max_length`.

        Raises:
            ValueError: as [`GruAttnOnnxEncoder`] for bad sources.
        """
        encoder_outputs = self.encoder(input_ids, attention_mask)
        hidden_states = encoder_outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long)
        eos = settings.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        pad = settings.pad_token_id if settings.pad_token_id is not None else eos[0]
        start = settings.decoder_start_token_id
        start = start if start is not None else settings.bos_token_id
        feed = {
            "keys": encoder_outputs.keys.numpy(),
            "encoder_hidden_states": hidden_states.numpy(),
            "attention_mask": attention_mask.long().numpy(),
            "hidden": np.ascontiguousarray(encoder_outputs.initial_state.numpy().transpose(1, 0, 2)),
            "decoder_input_ids": np.full((input_ids.shape[0], 1), start, dtype=np.int64),
        }
        sequences = [feed["decoder_input_ids"]]
        unfinished = np.ones(input_ids.shape[0], dtype=bool)
        for _ in range(max_length - 1):
            logits, feed["hidden"] = self.decoder_session.run(None, feed)
            tokens = np.where(unfinished, logits.argmax(axis=-1), pad)
            feed["decoder_input_ids"] = tokens[:, None]
            sequences.append(feed["decoder_input_ids"])
            unfinished &= ~np.isin(tokens, eos)
            if not unfinished.any():
                break
        return torch.from_numpy(np.concatenate(sequences, axis=1))

    def forward(
        self,
        decoder_input_ids: torch.LongTensor,
        encoder_outputs: GruAttnOnnxEncoderOutput,
        attention_mask: torch.Tensor | None = None,
        cache: GruAttnCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        One decoder step on ONNX Runtime, as `generate()` calls it.

        Args:
            decoder_input_ids (`torch.LongTensor` of shape `(batch_size, 1)`): the newest token of every row (the
                whole prefix when `cache` is `None`, of which only the last token is used when it is the start).
            encoder_outputs ([`GruAttnOnnxEncoderOutput`]): from [`GruAttnOnnxEncoder`].
            attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*): the source mask.
            cache ([`GruAttnCache`], *optional*): decoder state after the previous tokens; `None` on the first step.
            use_cache, return_dict: accepted for `generate()`; the state is always returned as `cache`.
            output_attentions, output_hidden_states: must be falsy (the graphs do not return them).

        Returns:
            [`Seq2SeqLMOutput`] with `logits` `(batch_size, 1, decoder_vocab_size)` (float32) and `cache`.

        Raises:
            ValueError: if attentions or hidden states are asked for, or the first call gets more than one decoder
                token (teacher forcing over a prefix is not exported; use the PyTorch model).
        """
        if output_attentions or output_hidden_states:
            raise ValueError("The ONNX decoder returns neither attentions nor hidden states; use the PyTorch model.")
        if cache is None:
            if decoder_input_ids.shape[1] != 1:
                raise ValueError(
                    "The ONNX decoder runs one token per step, carrying its state in `cache` (generate()'s default "
                    f"`use_cache=True`), from the start token; got {decoder_input_ids.shape[1]} decoder tokens "
                    "without a cache. Use the PyTorch model for decoder prompts or teacher forcing."
                )
            cache = GruAttnCache(
                encoder_outputs.initial_state.transpose(0, 1).contiguous(), encoder_outputs.keys, seq_length=0
            )
        hidden_states = encoder_outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long)
        logits, hidden = self.decoder_session.run(
            None,
            {
                "decoder_input_ids": decoder_input_ids[:, -1:].long().numpy(),
                "hidden": cache.hidden.numpy(),
                "keys": cache.keys.numpy(),
                "encoder_hidden_states": hidden_states.numpy(),
                "attention_mask": attention_mask.long().numpy(),
            },
        )
        cache = GruAttnCache(torch.from_numpy(hidden), cache.keys, cache.seq_length + 1, cache.key_groups)
        return Seq2SeqLMOutput(logits=torch.from_numpy(logits)[:, None], cache=cache)


__all__ = ["GruAttnOnnxEncoderOutput", "GruAttnOnnxForConditionalGeneration"]
