"""PyTorch GRU encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015) as a transformers model.

This file imports only torch, transformers, the standard library and sibling modules (by relative import), so that
it can be uploaded to the Hub and loaded with `trust_remote_code=True`.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

# safetensors through transformers (which depends on it): remote code may import only torch and transformers.
from transformers.modeling_utils import safe_open, safe_save_file
from transformers.utils import cached_file, logging

from .configuration_gru_attn import GruAttnConfig


logger = logging.get_logger(__name__)

# MKL's packed float32 GEMM (x86 builds of torch): `_vocabulary_logits` uses it at decoding steps.
_HAS_MKL_PACKED_GEMM = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def _packed_gemm_usable() -> bool:
    """MKL's packed GEMM is available and the code runs eagerly (a packed weight copy cannot be traced or exported)."""
    return _HAS_MKL_PACKED_GEMM and not (
        torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
    )

# generate() defaults shipped with every model (save_pretrained writes them to generation_config.json; from_pretrained
# reads that file back instead). `max_length` counts the decoder start token; users override any of them per call
# (a per-call `max_new_tokens` replaces the shipped `max_length`, see `GruAttnForConditionalGeneration.generate`).
DEFAULT_GENERATION_SETTINGS = {"num_beams": 5, "max_length": 128, "early_stopping": True, "length_penalty": 1.0}
# The vocabulary shortlist is saved next to the weights, outside model.safetensors (see GruAttnShortlist).
SHORTLIST_NAME = "shortlist.safetensors"
SHORTLIST_FORMAT = "hf_gru_attn.shortlist.v1"


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """
    Builds teacher-forcing decoder inputs from labels: prepends `decoder_start_token_id`, drops the last position and
    replaces the label padding value -100 by `pad_token_id` (as in transformers' BART/Marian).

    Args:
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`): target ids, -100 on ignored positions.
        pad_token_id (`int`): id that replaces -100.
        decoder_start_token_id (`int`): first decoder input id.

    Returns:
        `torch.LongTensor` of shape `(batch_size, target_length)`.
    """
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)


def _check_token_ids(name: str, ids: torch.Tensor, vocab_size: int, allow_ignore_index: bool = False):
    """Raises `ValueError` unless `ids` is a non-empty 2-D integer tensor with values in `[0, vocab_size)`."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype in (torch.bool,) or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        dtype = ids.dtype if isinstance(ids, torch.Tensor) else None
        raise ValueError(
            f"`{name}` must be an integer tensor of shape (batch_size, sequence_length); got {shape} of dtype {dtype}."
        )
    if ids.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(ids.shape)}); pass at least one sequence of one token.")
    valid = ids if not allow_ignore_index else ids[ids != -100]
    if valid.numel() and (valid.min() < 0 or valid.max() >= vocab_size):
        raise ValueError(
            f"`{name}` holds ids outside [0, {vocab_size}) (min {int(valid.min())}, max {int(valid.max())}): the "
            "tokenizer does not match this model's vocabulary."
        )


@dataclass
class GruAttnEncoderOutput(BaseModelOutput):
    r"""
    Output of [`GruAttnEncoder`]. Every tensor is batch-first, so that `generate()` can expand it for beams.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, source_length, encoder_output_size)`):
            Top-layer encoder outputs (both directions concatenated); zero on padding positions.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            `(embeddings, last_hidden_state)`, the embedded source and the encoder outputs.
        final_hidden_state (`torch.FloatTensor` of shape `(batch_size, layers * directions, encoder_hidden_size)`):
            Final GRU state of every layer and direction, taken at each row's last real token (padding excluded).
        input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`, *optional*, returned when the encoder
            runs with `use_shortlist=True`): the source ids, from which the decoder builds the batch's vocabulary
            shortlist at its first step (`generate()` passes the decoder only the encoder outputs).
    """

    final_hidden_state: torch.FloatTensor | None = None
    input_ids: torch.LongTensor | None = None


class GruAttnCache:
    """
    Recurrent decoder state carried between `generate()` steps (the model's `cache`).

    Unlike a transformer's key/value cache it does not grow: it holds the decoder GRU state and the attention keys,
    which are projected from the encoder outputs once per sentence.

    Args:
        hidden (`torch.FloatTensor` of shape `(decoder_layers, batch_size, hidden_size)`): decoder GRU state.
        keys (`torch.FloatTensor` of shape `(batch_size, source_length, key_size)`): precomputed attention keys.
        seq_length (`int`): number of decoder tokens consumed so far.
        key_groups (`torch.LongTensor` of shape `(batch_size,)`, *optional*): rows with equal ids hold identical
            keys (the beams of one source sentence); worked out from `keys` when first needed.
        shortlist (`tuple`, *optional*): the batch's output-layer shortlist `(candidate_ids, weight, bias)`: target
            ids `(num_candidates,)` and their rows of the output layer, `(num_candidates, readout_size)` and
            `(num_candidates,)` (see [`GruAttnForConditionalGeneration`]). It holds for the whole batch, so batch
            reorders and beam moves leave it as it is.
    """

    is_compileable = False
    is_croppable = False

    def __init__(
        self,
        hidden: torch.Tensor,
        keys: torch.Tensor,
        seq_length: int,
        key_groups: torch.Tensor | None = None,
        shortlist: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    ):
        self.hidden = hidden
        self.keys = keys
        self.seq_length = seq_length
        self.key_groups = key_groups
        self.shortlist = shortlist

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of decoder tokens consumed so far."""
        return self.seq_length

    def reorder_cache(self, beam_idx: torch.LongTensor):
        """
        Selects batch rows in place (beam search): `beam_idx` `(batch_size,)` gives each row's source row.

        Beam search moves rows only among the beams of one sentence, whose keys are identical (`generate()` copies
        the encoder outputs per beam), so the keys, `source_length` times larger than the state, are gathered only
        when some row would get other keys.
        """
        if self.key_groups is None:
            self.key_groups = _identical_row_groups(self.keys)
        beam_idx = beam_idx.to(self.key_groups.device)
        if torch.equal(self.key_groups[beam_idx], self.key_groups):
            self.hidden = self.hidden.index_select(1, beam_idx.to(self.hidden.device))
        else:
            self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.LongTensor):
        """Keeps (or repeats) the batch rows given by `indices` `(new_batch_size,)`, in place."""
        self.hidden = self.hidden.index_select(1, indices.to(self.hidden.device))
        self.keys = self.keys.index_select(0, indices.to(self.keys.device))
        if self.key_groups is not None:
            self.key_groups = self.key_groups.index_select(0, indices.to(self.key_groups.device))

    def batch_repeat_interleave(self, repeats: int):
        """Repeats every batch row `repeats` times in place (as `generate()` does for beams and samples)."""
        self.hidden = self.hidden.repeat_interleave(repeats, dim=1)
        self.keys = self.keys.repeat_interleave(repeats, dim=0)
        if self.key_groups is not None:
            self.key_groups = self.key_groups.repeat_interleave(repeats, dim=0)


def _identical_row_groups(keys: torch.Tensor) -> torch.LongTensor:
    """Ids `(batch_size,)` of the runs of consecutive rows of `keys` `(batch_size, ...)` that are exactly equal."""
    starts_new_run = (keys[1:] != keys[:-1]).flatten(1).any(dim=1)
    return torch.cat([starts_new_run.new_zeros(1), starts_new_run]).cumsum(0)


class GruAttnShortlist:
    """
    Lexical shortlist of the output layer (Jean et al. 2015, "On Using Very Large Target Vocabulary for Neural Machine
    Translation", Sec. 3.2; Marian's `--shortlist`): the target tokens a batch may produce are the union of the
    `top_k` likely translations of each of its source tokens and a fixed list of frequent (and special) target
    tokens; the output layer then computes only those rows, and every other token gets a logit of `-inf`.

    `scripts/build_shortlist.py` builds it from a parallel corpus (`hf_gru_attn.shortlist.build_shortlist`);
    `save_pretrained` writes it to `shortlist.safetensors` next to the weights and `from_pretrained` reads it back.

    Args:
        top_targets (`torch.LongTensor` of shape `(vocab_size, top_k)`): for each source id, its candidate target
            ids, best first; -1 fills the row of a source id with fewer than `top_k` candidates.
        frequent_targets (`torch.LongTensor` of shape `(num_frequent,)`): target ids that are always candidates.
        decoder_vocab_size (`int`): size of the target vocabulary that the ids index.
        metadata (`dict[str, str]`, *optional*): how the table was built (saved with it).

    Raises:
        ValueError: if a tensor has another shape or a non-integer dtype, or holds ids outside
            `[0, decoder_vocab_size)` (-1 allowed in `top_targets`).
    """

    def __init__(
        self,
        top_targets: torch.Tensor,
        frequent_targets: torch.Tensor,
        decoder_vocab_size: int,
        metadata: dict[str, str] | None = None,
    ):
        for name, tensor, dims, lowest in (
            ("top_targets", top_targets, 2, -1), ("frequent_targets", frequent_targets, 1, 0)
        ):
            if (
                not isinstance(tensor, torch.Tensor) or tensor.dim() != dims or tensor.is_floating_point()
                or tensor.dtype == torch.bool
            ):
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"Shortlist `{name}` must be a {dims}-D integer tensor, got {shape}.")
            if tensor.numel() and (tensor.min() < lowest or tensor.max() >= decoder_vocab_size):
                raise ValueError(
                    f"Shortlist `{name}` holds ids outside [{lowest}, {decoder_vocab_size}) (min {int(tensor.min())}, "
                    f"max {int(tensor.max())}): it was built for another target vocabulary."
                )
        self.top_targets = top_targets.long()
        self.frequent_targets = frequent_targets.long()
        self.decoder_vocab_size = decoder_vocab_size
        self.metadata = dict(metadata or {})

    @property
    def vocab_size(self) -> int:
        """Size of the source vocabulary (rows of `top_targets`)."""
        return self.top_targets.shape[0]

    def candidate_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, always_ids: tuple[int, ...] = ()
    ) -> torch.LongTensor:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`): the batch's source ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*): 0 on padding, whose
                ids are left out.
            always_ids (`tuple[int, ...]`): further target ids to include (the model's special tokens).

        Returns:
            `torch.LongTensor` of shape `(num_candidates,)`: the sorted, distinct target ids of the batch's shortlist.
        """
        source_ids = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
        top_targets = self.top_targets.to(input_ids.device)
        candidates = torch.cat([
            top_targets[source_ids.unique()].flatten(),
            self.frequent_targets.to(input_ids.device),
            torch.tensor(always_ids, dtype=torch.long, device=input_ids.device),
        ])
        return candidates[candidates >= 0].unique()

    def check_vocabulary(self, config: GruAttnConfig, where: str):
        """Raises `ValueError` unless the table's source and target vocabulary sizes are those of `config`."""
        if (self.vocab_size, self.decoder_vocab_size) != (config.vocab_size, config.decoder_vocab_size):
            raise ValueError(
                f"The shortlist {where} is for a vocabulary of {self.vocab_size} source and {self.decoder_vocab_size} "
                f"target tokens, but the model has {config.vocab_size} and {config.decoder_vocab_size}: it belongs to "
                "another model. Build one for this model with scripts/build_shortlist.py."
            )

    def save(self, path: str | os.PathLike):
        """Writes the table to the safetensors file `path` (int32 ids; sizes and build settings in its metadata)."""
        metadata = {
            **self.metadata, "format": SHORTLIST_FORMAT, "vocab_size": str(self.vocab_size),
            "decoder_vocab_size": str(self.decoder_vocab_size), "top_k": str(self.top_targets.shape[1]),
        }
        tensors = {"top_targets": self.top_targets.int().contiguous(), "frequent_targets": self.frequent_targets.int()}
        safe_save_file({name: tensor.cpu() for name, tensor in tensors.items()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, config: GruAttnConfig | None = None) -> "GruAttnShortlist":
        """
        Reads a table written by [`~GruAttnShortlist.save`].

        Args:
            path (`str` or `os.PathLike`): the `shortlist.safetensors` file.
            config ([`GruAttnConfig`], *optional*): when given, the table must be for its vocabulary.

        Raises:
            ValueError: if the file is not a readable safetensors file, is not a shortlist table (metadata or tensors
                missing), its tensors disagree with its metadata, or it is for another vocabulary than `config`'s.
        """
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (no __iter__)
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise ValueError(
                f"Cannot read the shortlist {str(path)!r}: {error}. The file is damaged or incomplete; build it again "
                "with scripts/build_shortlist.py."
            ) from None
        missing = {"top_targets", "frequent_targets"} - set(tensors)
        sizes_given = metadata.get("decoder_vocab_size", "").isdigit()
        if metadata.get("format") != SHORTLIST_FORMAT or missing or not sizes_given:
            raise ValueError(
                f"{str(path)!r} is not a shortlist table (format {metadata.get('format')!r}, tensors "
                f"{sorted(tensors)}; expected format {SHORTLIST_FORMAT!r} with top_targets and frequent_targets). "
                "Build it with scripts/build_shortlist.py."
            )
        top_targets = tensors["top_targets"]
        if top_targets.dim() != 2 or str(top_targets.shape[0]) != metadata.get("vocab_size"):
            raise ValueError(
                f"The shortlist {str(path)!r} is damaged: top_targets has shape {tuple(top_targets.shape)} but its "
                f"metadata says vocab_size={metadata.get('vocab_size')}. Build it again with "
                "scripts/build_shortlist.py."
            )
        shortlist = cls(top_targets, tensors["frequent_targets"], int(metadata["decoder_vocab_size"]), metadata)
        if config is not None:
            shortlist.check_vocabulary(config, repr(str(path)))
        return shortlist


class GruAttnAttention(nn.Module):
    """
    Attention over the encoder outputs with the previous decoder state as query.

    - `"additive"`: Bahdanau et al. (2015), Sec. A.1.2, `e_ij = v^T tanh(W_q s_{i-1} + W_k h_j + b)`. The key term
      `W_k h_j + b` does not depend on the step, so it is computed once per sentence (`project_keys`).
    - `"dot"`: Luong et al. (2015), Sec. 3.1, `e_ij = s_{i-1}^T h_j`.
    - `"general"`: Luong et al. (2015), Sec. 3.1, `e_ij = s_{i-1}^T W h_j`, with `W h_j` computed once per sentence.

    Padding positions get exactly zero weight.

    The additive scores are computed as `2 v^T sigmoid(2 (W_q s_{i-1} + W_k h_j + b))`, which equals `e_ij + v^T 1`
    (`tanh(x) = 2 sigmoid(2x) - 1`): the softmax ignores the constant, and sigmoid costs about a third of tanh on CPUs.
    The keys therefore come doubled from `project_keys`.

    The scores and the softmax are computed in float32 whatever the model's dtype (a no-op for float32 models): a
    bfloat16 model that rounds its scores to 8 bits shifts the attention weights by percents, which cost 0.33
    sacreBLEU on Multi30k test2016 (0.06 with float32 scores).
    """

    def __init__(self, config: GruAttnConfig):
        super().__init__()
        self.attention_type = config.attention_type
        if self.attention_type == "additive":
            self.query_proj = nn.Linear(config.hidden_size, config.attention_size, bias=False)
            self.key_proj = nn.Linear(config.encoder_output_size, config.attention_size)
            self.energy_proj = nn.Linear(config.attention_size, 1, bias=False)
        elif self.attention_type == "general":
            self.key_proj = nn.Linear(config.encoder_output_size, config.hidden_size, bias=False)

    def project_keys(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """
        Args:
            encoder_hidden_states (`torch.FloatTensor` of shape `(batch_size, source_length, encoder_output_size)`).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, source_length, key_size)`: `2 (W_k h + b)` of `attention_size`
            (additive), `W h` of `hidden_size` (general) or the encoder outputs themselves (dot).
        """
        if self.attention_type == "dot":
            return encoder_hidden_states
        if self.attention_type == "general":
            return self.key_proj(encoder_hidden_states)
        return self.key_proj(encoder_hidden_states) * 2

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, attention_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            query (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): previous decoder state (top layer).
            keys (`torch.FloatTensor` of shape `(batch_size, source_length, key_size)`): from `project_keys`.
            values (`torch.FloatTensor` of shape `(batch_size, source_length, encoder_output_size)`): encoder outputs.
            attention_bias (`torch.FloatTensor` of shape `(batch_size, source_length)`, *optional*): added to the
                scores, the dtype's minimum on padding positions and 0 elsewhere (see `padding_bias`); `None` when
                there is no padding.

        Returns:
            `(context, weights)` of shapes `(batch_size, encoder_output_size)` and `(batch_size, source_length)`;
            weight rows sum to 1.
        """
        if self.attention_type == "additive":
            query = self.query_proj(query).unsqueeze(1)
            energy = torch.sigmoid(torch.add(keys, query, alpha=2))  # (batch, src_len, attention_size)
            scores = torch.matmul(energy.float(), self.energy_proj.weight[0].float() * 2)  # (batch, src_len)
        else:
            scores = torch.bmm(keys.float(), query.float().unsqueeze(2)).squeeze(2)  # (batch, src_len)
        if attention_bias is not None:
            scores = scores + attention_bias
        weights = torch.softmax(scores, dim=-1).to(values.dtype)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (batch, encoder_output_size)
        return context, weights

    @staticmethod
    def padding_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """
        Args:
            padding_mask (`torch.BoolTensor` of shape `(batch_size, source_length)`): `True` on padding positions.
            dtype (`torch.dtype`): dtype of the bias.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, source_length)`, the dtype's minimum on padding (so that the
            softmax gives those positions exactly zero weight) and 0 elsewhere, or `None` when nothing is padded.
        """
        if not padding_mask.any():
            return None
        return torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device).masked_fill_(
            padding_mask, torch.finfo(dtype).min
        )


class GruAttnPreTrainedModel(PreTrainedModel):
    """Weight initialisation, tying and generation settings shared by the GRU attention models."""

    config_class = GruAttnConfig
    config: GruAttnConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["GruAttnEncoder", "GruAttnDecoder"]
    # The decoder state cannot be cropped or rewound: generate() refuses assisted decoding for stateful models.
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The decoder state is a GruAttnCache, not a key/value cache: generate() must not build a DynamicCache.
        return False

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        # transformers gates every tie by `config.tie_word_embeddings`; here sharing the source/target embeddings
        # (`share_embeddings`) and tying the output layer (`tie_word_embeddings`) are separate switches, and
        # `_tied_weights_keys` is built from both in `__init__`.
        if all_submodels:
            return super().get_expanded_tied_weights_keys(all_submodels=True)
        return dict(self._tied_weights_keys or {})

    def _init_weights(self, module: nn.Module):
        """Normal embeddings (zero padding row), Xavier-uniform linear and GRU input weights, orthogonal GRU
        recurrent weights (Saxe et al. 2014), zero biases. transformers' default does not handle `nn.GRU`."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                else:
                    init.zeros_(param)


class GruAttnEncoder(nn.Module):
    """
    Embedding and (bi)directional multi-layer GRU over packed sequences, so that padding never enters the
    recurrence. Rows may be padded on either side and need not be sorted by length.
    """

    def __init__(self, config: GruAttnConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.rnn = nn.GRU(
            config.embedding_size,
            config.encoder_hidden_size,
            num_layers=config.encoder_layers,
            dropout=config.dropout if config.encoder_layers > 1 else 0.0,
            bidirectional=config.bidirectional_encoder,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        use_shortlist: bool | None = None,
    ) -> GruAttnEncoderOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`): source token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*):
                1 (or `True`) on real tokens, 0 on padding; padding may be on either side. `None` means no padding.
            output_attentions (`bool`, *optional*): accepted for API compatibility; the encoder has no attention.
            output_hidden_states (`bool`, *optional*): also return `(embeddings, outputs)`.
            return_dict (`bool`, *optional*): accepted for API compatibility; a [`GruAttnEncoderOutput`] is returned.
            use_shortlist (`bool`, *optional*): also return `input_ids`, from which the decoder builds its vocabulary
                shortlist; defaults to `config.use_shortlist` (`generate()` passes its `use_shortlist` here).

        Returns:
            [`GruAttnEncoderOutput`].

        Raises:
            ValueError: on a non-integer or non-2-D `input_ids`, ids outside the vocabulary, a mask of another shape,
                or a row without any real token.
        """
        _check_token_ids("input_ids", input_ids, self.config.vocab_size)
        source_ids = input_ids if (self.config.use_shortlist if use_shortlist is None else use_shortlist) else None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} "
                f"but `input_ids` has {tuple(input_ids.shape)}."
            )
        attention_mask = attention_mask.bool()
        lengths = attention_mask.sum(dim=1)
        if (lengths == 0).any():
            rows = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"Rows {rows} of `attention_mask` have no real token: every source needs at least one.")

        max_positions = self.config.max_source_positions
        if max_positions is not None and lengths.max() > max_positions:
            logger.warning(f"Source longer than max_source_positions={max_positions}: truncated to that many tokens.")
            lengths = lengths.clamp(max=max_positions)

        # Gather each row's real tokens to the front (keeping their order), so packing sees right padding.
        source_length = input_ids.shape[1]
        positions = torch.arange(source_length, device=input_ids.device)
        right_padded = positions.unsqueeze(0) < lengths.unsqueeze(1)
        order = None
        if not torch.equal(right_padded, attention_mask):
            order = torch.sort((~attention_mask).to(torch.int8), dim=1, stable=True).indices
            input_ids = input_ids.gather(1, order)

        embeddings = self.dropout(self.embed_tokens(input_ids))  # (batch, src_len, embedding_size)
        packed = pack_padded_sequence(embeddings, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, final_hidden_state = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=source_length)
        outputs = self.dropout(outputs)  # (batch, src_len, encoder_output_size), zero on padding
        if order is not None:
            outputs = torch.zeros_like(outputs).scatter(1, order.unsqueeze(2).expand_as(outputs), outputs)
            embeddings = torch.zeros_like(embeddings).scatter(1, order.unsqueeze(2).expand_as(embeddings), embeddings)

        return GruAttnEncoderOutput(
            last_hidden_state=outputs,
            hidden_states=(embeddings, outputs) if output_hidden_states else None,
            final_hidden_state=final_hidden_state.transpose(0, 1),  # (batch, layers * directions, enc_hidden)
            input_ids=source_ids,
        )


def _gru_cell(gates_input: torch.Tensor, hidden: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor):
    """
    One GRU step (Cho et al. 2014) with the input projection already done, using `nn.GRU`'s gate layout (r, z, n):
    `r, z = sigmoid(i_rz + h_rz)`, `n = tanh(i_n + r * h_n)`, `s' = n + z * (s - n)` with `h = W_hh s + b_hh`.

    Args:
        gates_input (`torch.FloatTensor` of shape `(batch_size, 3 * hidden_size)`): `W_ih x + b_ih`.
        hidden (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): previous state `s`.
        weight_hh (`torch.FloatTensor` of shape `(3 * hidden_size, hidden_size)`), bias_hh (`(3 * hidden_size,)`).

    Returns:
        `torch.FloatTensor` of shape `(batch_size, hidden_size)`: the new state.
    """
    hidden_size = hidden.shape[1]
    gates_hidden = F.linear(hidden, weight_hh, bias_hh)
    reset, update = torch.sigmoid(gates_input[:, : 2 * hidden_size] + gates_hidden[:, : 2 * hidden_size]).chunk(2, 1)
    candidate = torch.tanh(torch.addcmul(gates_input[:, 2 * hidden_size :], reset, gates_hidden[:, 2 * hidden_size :]))
    return candidate + update * (hidden - candidate)


class GruAttnDecoder(nn.Module):
    """
    Attention GRU decoder. Per target step i: `c_i = attention(s_{i-1}, H)`, `s_i = GRU([E y_{i-1}; c_i], s_{i-1})`;
    it returns the readout features `[s_i; c_i; E y_{i-1}]` of every step for the output layer.

    Its parameters are a standard `nn.GRU` (so checkpoints keep torch's names), but the recurrence is unrolled by
    hand: the embedding part of the GRU input projection is one matmul over all steps, and only the context part
    and the recurrent matmul run per step.
    """

    def __init__(self, config: GruAttnConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(
            config.decoder_vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        self.attention = GruAttnAttention(config)
        self.rnn = nn.GRU(
            config.embedding_size + config.encoder_output_size,
            config.hidden_size,
            num_layers=config.decoder_layers,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0,
            batch_first=True,
        )
        if config.decoder_init == "bridge":
            num_directions = 2 if config.bidirectional_encoder else 1
            self.bridge = nn.Linear(
                config.encoder_hidden_size * num_directions, config.hidden_size * config.decoder_layers
            )
        self.dropout = nn.Dropout(config.dropout)

    def initial_state(self, encoder_final_hidden_state: torch.Tensor) -> torch.Tensor:
        """
        Args:
            encoder_final_hidden_state (`torch.FloatTensor`): `(batch_size, layers * directions, encoder_hidden_size)`.

        Returns:
            `torch.FloatTensor` of shape `(decoder_layers, batch_size, hidden_size)`, per `config.decoder_init`:
            `"bridge"` `tanh(W [h_fwd; h_bwd] + b)` of the top encoder layer (Bahdanau et al. 2015, A.2.2, over both
            directions), `"last"` the encoder's final states, `"zero"` zeros.
        """
        batch_size = encoder_final_hidden_state.shape[0]
        num_layers, hidden_size = self.config.decoder_layers, self.config.hidden_size
        if self.config.decoder_init == "zero":
            return encoder_final_hidden_state.new_zeros(num_layers, batch_size, hidden_size)
        per_layer = encoder_final_hidden_state.reshape(batch_size, self.config.encoder_layers, -1)
        if self.config.decoder_init == "last":
            return per_layer.transpose(0, 1).contiguous()
        bridged = torch.tanh(self.bridge(per_layer[:, -1]))  # (batch, decoder_layers * hidden_size)
        return bridged.view(batch_size, num_layers, hidden_size).transpose(0, 1).contiguous()

    def forward(
        self,
        input_ids: torch.LongTensor,
        encoder_hidden_states: torch.Tensor,
        encoder_padding_mask: torch.Tensor,
        encoder_final_hidden_state: torch.Tensor | None = None,
        cache: GruAttnCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, GruAttnCache, torch.Tensor, torch.Tensor | None]:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, target_length)`): decoder input ids.
            encoder_hidden_states (`torch.FloatTensor` of shape `(batch_size, source_length, encoder_output_size)`).
            encoder_padding_mask (`torch.BoolTensor` of shape `(batch_size, source_length)`): `True` on padding.
            encoder_final_hidden_state (`torch.FloatTensor`, *optional*): see [`GruAttnEncoderOutput`]; needed when
                `cache` is `None`.
            cache ([`GruAttnCache`], *optional*): state after the previous tokens; `input_ids` then continue from it.
            output_attentions (`bool`): also return the attention weights.

        Returns:
            `(features, cache, outputs, attentions)`: readout features `(batch_size, target_length, hidden_size +
            encoder_output_size + embedding_size)`, the new [`GruAttnCache`], GRU outputs `(batch_size,
            target_length, hidden_size)` and, if asked, attention weights `(batch_size, target_length, source_length)`.
        """
        embedding_size = self.config.embedding_size
        embeddings = self.dropout(self.embed_tokens(input_ids))  # (batch, tgt_len, embedding_size)
        if cache is None:
            hidden = list(self.initial_state(encoder_final_hidden_state).unbind(0))
            keys = self.attention.project_keys(encoder_hidden_states)
            past_length = 0
        else:
            hidden, keys, past_length = list(cache.hidden.unbind(0)), cache.keys, cache.seq_length
        key_groups = None if cache is None else cache.key_groups

        layers = [
            (getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"bias_ih_l{k}"),
             getattr(self.rnn, f"weight_hh_l{k}"), getattr(self.rnn, f"bias_hh_l{k}"))
            for k in range(self.config.decoder_layers)
        ]
        weight_ih0, bias_ih0 = layers[0][0], layers[0][1]
        # Embedding part of the first layer's input projection, for all steps at once, time-major and unbound so that
        # each step reads a contiguous (batch, 3 * hidden) block and backward stacks the step gradients once (indexing
        # would zero-fill a full-size gradient per step).
        embedding_gates = F.linear(embeddings.transpose(0, 1), weight_ih0[:, :embedding_size], bias_ih0).unbind(0)
        context_weight = weight_ih0[:, embedding_size:].t()
        # Padding enters as an additive score bias, built once here rather than masked at every step.
        attention_bias = self.attention.padding_bias(encoder_padding_mask, encoder_hidden_states.dtype)

        outputs, contexts, attentions = [], [], []
        for step in range(input_ids.shape[1]):
            context, weights = self.attention(hidden[-1], keys, encoder_hidden_states, attention_bias)
            layer_input = torch.addmm(embedding_gates[step], context, context_weight)
            for k, (weight_ih, bias_ih, weight_hh, bias_hh) in enumerate(layers):
                if k > 0:
                    layer_input = F.linear(self.dropout(hidden[k - 1]), weight_ih, bias_ih)
                hidden[k] = _gru_cell(layer_input, hidden[k], weight_hh, bias_hh)
            outputs.append(hidden[-1])
            contexts.append(context)
            if output_attentions:
                attentions.append(weights)

        outputs = torch.stack(outputs, dim=1)  # (batch, tgt_len, hidden_size)
        features = torch.cat([outputs, torch.stack(contexts, dim=1), embeddings], dim=2)
        new_cache = GruAttnCache(
            torch.stack(hidden), keys, past_length + input_ids.shape[1], key_groups,
            shortlist=None if cache is None else cache.shortlist,
        )
        return features, new_cache, outputs, torch.stack(attentions, dim=1) if output_attentions else None


class GruAttnModel(GruAttnPreTrainedModel):
    """
    The bare GRU attention encoder-decoder: returns the decoder's readout features (`last_hidden_state`, of size
    `hidden_size + encoder_output_size + embedding_size`) without the output layer.
    """

    def __init__(self, config: GruAttnConfig):
        super().__init__(config)
        self.encoder = GruAttnEncoder(config)
        self.decoder = GruAttnDecoder(config)
        self._tied_weights_keys = (
            {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"} if config.share_embeddings else {}
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.encoder.embed_tokens = value
        if self.config.share_embeddings:
            self.decoder.embed_tokens = value

    def get_encoder(self, modality: str | None = None) -> GruAttnEncoder:
        return self.encoder

    def get_decoder(self, modality: str | None = None) -> GruAttnDecoder:
        return self.decoder

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: GruAttnEncoderOutput | tuple | None = None,
        cache: GruAttnCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Seq2SeqModelOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`):
                Source token ids; not needed when `encoder_outputs` is given.
            attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*):
                1 on real source tokens, 0 on padding (either side). `None` means no padding.
            decoder_input_ids (`torch.LongTensor` of shape `(batch_size, target_length)`):
                Decoder input ids (teacher forcing), or only the newest token when `cache` is given.
            decoder_attention_mask (`torch.Tensor` of shape `(batch_size, target_length)`, *optional*):
                The decoder is causal, so right padding of the targets cannot affect earlier positions and needs no
                mask; accepted for API compatibility and checked to be right-padded.
            encoder_outputs ([`GruAttnEncoderOutput`] or `tuple`, *optional*): precomputed encoder outputs.
            cache ([`GruAttnCache`], *optional*): decoder state from the previous call (also accepted as
                `past_key_values` by the head).
            use_cache (`bool`, *optional*): return the decoder state as `cache`; defaults to `config.use_cache`.
            output_attentions (`bool`, *optional*): return the attention weights as `cross_attentions`.
            output_hidden_states (`bool`, *optional*): return encoder and decoder hidden states.
            return_dict (`bool`, *optional*): return a [`Seq2SeqModelOutput`] (default) rather than a tuple.

        Returns:
            [`Seq2SeqModelOutput`] with `last_hidden_state` (readout features, `(batch_size, target_length,
            hidden_size + encoder_output_size + embedding_size)`), `cache`, `cross_attentions` (a 1-tuple of
            `(batch_size, 1, target_length, source_length)`), `encoder_last_hidden_state`.

        Raises:
            ValueError: on missing `decoder_input_ids`, ids outside the vocabulary, wrong shapes or dtypes, a row
                without real source tokens or a left-padded `decoder_attention_mask`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        if decoder_input_ids is None:
            raise ValueError("Pass `decoder_input_ids` or `labels` (from which decoder inputs are built).")
        _check_token_ids("decoder_input_ids", decoder_input_ids, self.config.decoder_vocab_size)
        mask = decoder_attention_mask
        if mask is not None:
            # generate() passes the mask of all decoder tokens so far, while decoder_input_ids hold only the new ones
            past_length = cache.seq_length if isinstance(cache, GruAttnCache) else 0
            expected = (decoder_input_ids.shape[0], past_length + decoder_input_ids.shape[1])
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"`decoder_attention_mask` has shape {tuple(mask.shape)}, expected {expected} (batch size, "
                    "decoder tokens including those already in `cache`)."
                )
            if (mask[:, 1:] > mask[:, :-1]).any():
                raise ValueError("`decoder_attention_mask` must be right-padded (ones, then zeros) in every row.")
        if isinstance(cache, GruAttnCache) and cache.hidden.shape[1] != decoder_input_ids.shape[0]:
            raise ValueError(
                f"`cache` holds {cache.hidden.shape[1]} rows but `decoder_input_ids` has batch size "
                f"{decoder_input_ids.shape[0]}."
            )

        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass `input_ids` (the source) or precomputed `encoder_outputs`.")
            encoder_outputs = self.encoder(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, GruAttnEncoderOutput):
            encoder_outputs = GruAttnEncoderOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 2 else None,
                final_hidden_state=encoder_outputs[-1] if len(encoder_outputs) > 1 else None,
            )
        if encoder_outputs.final_hidden_state is None and not isinstance(cache, GruAttnCache):
            raise ValueError(
                "`encoder_outputs` lacks the encoder's final state (`final_hidden_state`, the last element of a "
                "tuple), which starts the decoder: pass what `model.get_encoder()` returns."
            )
        encoder_hidden_states = encoder_outputs.last_hidden_state
        if decoder_input_ids.shape[0] != encoder_hidden_states.shape[0]:
            raise ValueError(
                f"`decoder_input_ids` has batch size {decoder_input_ids.shape[0]} but the source has "
                f"{encoder_hidden_states.shape[0]}."
            )
        source_shape = tuple(encoder_hidden_states.shape[:2])
        if attention_mask is None:
            real = encoder_hidden_states.new_ones(source_shape, dtype=torch.bool)
        elif tuple(attention_mask.shape) != source_shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but the source (encoder outputs) has "
                f"{source_shape}."
            )
        else:
            real = attention_mask.bool()
        if self.config.max_source_positions is not None:
            # The encoder kept only each row's first max_source_positions real tokens: the rest get no attention.
            real = real & (real.long().cumsum(dim=1) <= self.config.max_source_positions)
        padding_mask = ~real

        features, new_cache, decoder_outputs, attentions = self.decoder(
            decoder_input_ids,
            encoder_hidden_states,
            padding_mask,
            encoder_outputs.final_hidden_state,
            cache=cache if isinstance(cache, GruAttnCache) else None,
            output_attentions=output_attentions,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=features,
            cache=new_cache if use_cache else None,
            decoder_hidden_states=(decoder_outputs,) if output_hidden_states else None,
            cross_attentions=(attentions.unsqueeze(1),) if output_attentions else None,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
        )
        return output if return_dict else output.to_tuple()


class GruAttnForConditionalGeneration(GruAttnPreTrainedModel, GenerationMixin):
    """
    GRU attention encoder-decoder with a language-modelling head, for translation and other seq2seq tasks; works
    with `generate()` (greedy, beam search, sampling), `Seq2SeqTrainer` and the Auto classes.

    Output layer: `logits = W_out r + b` with the readout `r = [s_i; c_i; E y_{i-1}]`; when
    `config.tie_word_embeddings`, the readout is first mapped to `embedding_size` by `tanh(W_r r)` and `W_out` is
    the target embedding matrix (Press & Wolf 2017).

    Vocabulary shortlist (opt-in, `use_shortlist`): with a [`GruAttnShortlist`] (`model.shortlist`, read from
    `shortlist.safetensors` by `from_pretrained`), decoding computes the output layer only on the batch's candidate
    target ids, worked out once from the source at the first decoder step and kept in the cache; `logits` keep the
    full vocabulary shape with `-inf` outside the candidates, so every logits processor, greedy, beam search,
    sampling and `output_scores` work as before, and the scores are log-probabilities over the candidates.
    """

    # The loss is summed and divided by `num_items_in_batch` when the Trainer passes it (exact gradient accumulation).
    accepts_loss_kwargs = True

    def __init__(self, config: GruAttnConfig):
        super().__init__(config)
        self.model = GruAttnModel(config)
        readout_size = config.hidden_size + config.encoder_output_size + config.embedding_size
        if config.tie_word_embeddings:
            self.readout = nn.Linear(readout_size, config.embedding_size, bias=False)
            readout_size = config.embedding_size
        self.lm_head = nn.Linear(readout_size, config.decoder_vocab_size)
        # Point every tie at its root parameter: chains (lm_head -> decoder -> encoder) do not survive loading.
        self._tied_weights_keys = {}
        if config.tie_word_embeddings:
            source = "encoder" if config.share_embeddings else "decoder"
            self._tied_weights_keys["lm_head.weight"] = f"model.{source}.embed_tokens.weight"
        self._packed_output_weights: dict[tuple[int, int, int], torch.Tensor] = {}  # see _packed_output_weight
        self.post_init()
        for name, value in DEFAULT_GENERATION_SETTINGS.items():
            if getattr(self.generation_config, name, None) is None:
                setattr(self.generation_config, name, value)
        # Not a parameter or buffer: it stays out of model.safetensors and is saved in its own file.
        self.shortlist: GruAttnShortlist | None = None

    def set_shortlist(self, shortlist: GruAttnShortlist | None):
        """
        Attaches a vocabulary shortlist (or removes it with `None`); `save_pretrained` then saves it too.

        Raises:
            ValueError: if `shortlist` is for another source or target vocabulary size than this model's.
        """
        if shortlist is not None:
            shortlist.check_vocabulary(self.config, "given")
        self.shortlist = shortlist

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, which also reads the vocabulary shortlist `shortlist.safetensors` when the
        folder or Hub repo has one (a model without one loads as before, offline too).

        Raises:
            ValueError: when the shortlist file is damaged or for another vocabulary (see [`GruAttnShortlist.load`]);
                otherwise what `PreTrainedModel.from_pretrained` raises.
        """
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if pretrained_model_name_or_path is not None:
            hub_kwargs = {name: kwargs[name] for name in (
                "cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder"
            ) if kwargs.get(name) is not None}
            path = cached_file(
                pretrained_model_name_or_path, SHORTLIST_NAME, **hub_kwargs,
                _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
            )
            if path is not None:
                model.set_shortlist(GruAttnShortlist.load(path, model.config))
        return loaded

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs):
        """
        `PreTrainedModel.save_pretrained`, which also writes the shortlist (when the model has one) to
        `shortlist.safetensors`; `push_to_hub` and `scripts/push_to_hub.py` upload it with the weights. A
        `shortlist.safetensors` already in the folder is left as it is when the model has none.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        if push_to_hub and self.shortlist is not None:
            # transformers uploads from inside save_pretrained, before the shortlist below is written: save, then
            # upload with push_to_hub (which saves again, shortlist included, into a temporary folder).
            hub_kwargs = {
                name: kwargs.pop(name) for name in ("commit_message", "create_pr", "private") if name in kwargs
            }
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            self.save_pretrained(save_directory, is_main_process, **kwargs)
            if is_main_process:
                self.push_to_hub(repo_id, token=kwargs.get("token"), **hub_kwargs)
            return
        super().save_pretrained(save_directory, is_main_process, push_to_hub=push_to_hub, **kwargs)
        if self.shortlist is not None and is_main_process:
            self.shortlist.save(os.path.join(save_directory, SHORTLIST_NAME))

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """
        [`GenerationMixin.generate`], with a per-call `max_new_tokens` replacing the `max_length` of
        `model.generation_config` silently.

        transformers 5.24 treats a `max_length` in the model's generation config as set by the user
        (`has_default_max_length` in `generate` requires `model.generation_config.max_length is None`) and logs "Both
        `max_new_tokens` and `max_length` seem to have been set" at every call that passes `max_new_tokens`, though
        `max_new_tokens` wins anyway. Shipped defaults belong in `generation_config.json` (transformers'
        `GenerationConfig._get_default_generation_params` says so; its per-model alternative,
        `generation_config_class`, is not reloaded by `from_pretrained` for `GenerationMixin` models, and
        `Seq2SeqTrainer` writes the defaults into `model.generation_config` at every evaluation), so this passes
        `max_length=None` with `max_new_tokens`, as transformers' docs advise users to (PR 26147). An explicit
        per-call `max_length` (alone or with `max_new_tokens`) and a `generation_config` argument pass unchanged.

        Args:
            inputs (`torch.LongTensor` of shape `(batch_size, source_length)`, *optional*): source ids.
            generation_config ([`~transformers.GenerationConfig`], *optional*): replaces `model.generation_config`.
            **kwargs: generation settings and model inputs, as for [`GenerationMixin.generate`].

        Returns:
            As [`GenerationMixin.generate`]: `torch.LongTensor` of shape `(batch_size * num_return_sequences,
            target_length)` (decoder start token first), or a `ModelOutput` with `return_dict_in_generate=True`.
        """
        if generation_config is None and kwargs.get("max_new_tokens") is not None and "max_length" not in kwargs:
            kwargs["max_length"] = None
        return super().generate(inputs, generation_config, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lm_head = new_embeddings

    def get_encoder(self, modality: str | None = None) -> GruAttnEncoder:
        return self.model.encoder

    def get_decoder(self, modality: str | None = None) -> GruAttnDecoder:
        return self.model.decoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs from `labels` (see [`shift_tokens_right`]); used by the seq2seq collator."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def _batch_shortlist(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        encoder_outputs: GruAttnEncoderOutput | tuple | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """
        The batch's shortlist `(candidate_ids, weight, bias)` for [`GruAttnCache`]: the candidates of the source ids
        (`input_ids`, else the `input_ids` kept in `encoder_outputs`) and the special tokens, with their rows of
        the output layer.

        Raises:
            ValueError: if the model has no shortlist, or the source ids are not available.
        """
        if self.shortlist is None:
            raise ValueError(
                "use_shortlist=True, but this model has no vocabulary shortlist. Build one with `python "
                "scripts/build_shortlist.py --model MODEL_DIR` (it writes MODEL_DIR/shortlist.safetensors, which "
                "from_pretrained loads), or attach one with `model.set_shortlist(...)`."
            )
        if input_ids is None:
            input_ids = getattr(encoder_outputs, "input_ids", None)
        if input_ids is None:
            raise ValueError(
                "use_shortlist=True needs the source ids: pass `input_ids`, or `encoder_outputs` from "
                "`model.get_encoder()(input_ids, attention_mask, use_shortlist=True)`, which keeps them."
            )
        special_ids = (self.config.pad_token_id, self.config.bos_token_id, self.config.decoder_start_token_id)
        eos_ids = self.config.eos_token_id
        eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
        always_ids = tuple(token for token in (*special_ids, *eos_ids) if token is not None)
        candidate_ids = self.shortlist.candidate_ids(input_ids, attention_mask, always_ids)
        bias = None if self.lm_head.bias is None else self.lm_head.bias.index_select(0, candidate_ids)
        return candidate_ids, self.lm_head.weight.index_select(0, candidate_ids), bias

    def _vocabulary_logits(self, features: torch.Tensor, shortlist: tuple | None = None) -> torch.Tensor:
        """
        `lm_head(features)` for `features` `(batch_size, target_length, readout_size)`. Without autograd on a CPU
        (decoding), the same product is taken in the layout that is fastest for few rows:

        - one decoding step (`target_length == 1`) of a float32 model outside autocast on an MKL build of torch:
          MKL's packed GEMM
          (`cblas_sgemm_pack`/`compute`, as torch's inductor runs frozen float32 linears) on a copy of `W` packed
          for that many rows (1.07-1.4x faster than the layout below on AVX-512 at 32-64 rows); the copy is made on
          the first step of a row count and kept for the two latest row counts and the current weights (see
          [`_packed_output_weight`]); not while tracing or exporting (`torch.jit`, `torch.compile`, `torch.export`,
          `torch.onnx`), which get `lm_head`'s own layout, for which ONNX Runtime prepacks the weight (1.35x faster
          than the layout below at 160-320 rows);
        - otherwise `(W features^T + b)^T`: MKL splits that layout better over threads (1.2-1.7x faster on 2 AVX2
          cores for 8-320 rows, the same for thousands), and the result is a transposed view rather than a copy.

        With a `shortlist` `(candidate_ids, weight, bias)` (see [`GruAttnCache`]) only the candidates' rows are
        computed, in the second layout; the other logits are `-inf`. Returns `(batch_size, target_length,
        decoder_vocab_size)`.
        """
        if shortlist is not None:
            candidate_ids, weight, bias = shortlist
            if torch.is_grad_enabled() or features.device.type != "cpu":
                logits = F.linear(features, weight, bias).reshape(-1, candidate_ids.shape[0])
            else:
                rows = features.reshape(-1, features.shape[-1]).t()
                logits = (torch.mm(weight, rows) if bias is None else torch.addmm(bias.unsqueeze(1), weight, rows)).t()
            # Scattered into contiguous rows: generate() copies and scans the full-vocabulary rows at every step.
            full = logits.new_full((logits.shape[0], self.config.decoder_vocab_size), float("-inf"))
            return full.index_copy_(1, candidate_ids, logits).view(*features.shape[:-1], -1)
        if torch.is_grad_enabled() or features.device.type != "cpu" or torch.jit.is_tracing():
            return self.lm_head(features)
        rows = features.reshape(-1, features.shape[-1])
        weight, bias = self.lm_head.weight, self.lm_head.bias
        packable = weight.dtype == features.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        if _packed_gemm_usable() and features.shape[1] == 1 and packable and bias is not None:
            packed = self._packed_output_weight(rows.shape[0])
            logits = torch.ops.mkl._mkl_linear(rows.contiguous(), packed, weight, bias, rows.shape[0])
        else:
            logits = (torch.mm(weight, rows.t()) if bias is None else torch.addmm(bias.unsqueeze(1), weight, rows.t()))
            logits = logits.t()
        return logits.view(*features.shape[:-1], logits.shape[-1])

    def _packed_output_weight(self, num_rows: int) -> torch.Tensor:
        """
        `lm_head.weight` packed by MKL for products with `num_rows` rows (about 1.5x the weight's memory), cached for
        the two latest row counts. A cached copy is used only while the weight is the same tensor, unchanged since
        packing (`data_ptr` and autograd's version counter, which every in-place op, optimizer step and
        `load_state_dict` advances; writes through `weight.data` bypass that counter, so call
        `model._packed_output_weights.clear()` after them).
        """
        weight = self.lm_head.weight
        key = (num_rows, weight.data_ptr(), weight._version)
        packed = self._packed_output_weights.pop(key, None)
        if packed is None:
            self._packed_output_weights = {
                old: value for old, value in self._packed_output_weights.items() if old[1:] == key[1:]
            }
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), num_rows)
        self._packed_output_weights[key] = packed  # re-inserted: the newest
        while len(self._packed_output_weights) > 2:
            self._packed_output_weights.pop(next(iter(self._packed_output_weights)))
        return packed

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: GruAttnEncoderOutput | tuple | None = None,
        cache: GruAttnCache | None = None,
        past_key_values: GruAttnCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        use_shortlist: bool | None = None,
    ) -> Seq2SeqLMOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, cache, use_cache,
            output_attentions, output_hidden_states, return_dict: as in [`GruAttnModel.forward`].
            past_key_values ([`GruAttnCache`], *optional*): the older name of `cache`.
            labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
                Target ids for the cross-entropy loss; -100 marks ignored positions. Without `decoder_input_ids`, the
                decoder inputs are `labels` shifted right with `decoder_start_token_id`.
            num_items_in_batch (`int` or `torch.Tensor`, *optional*):
                Number of non-ignored label tokens in the whole (accumulated) batch, passed by the Trainer: the loss
                is then the summed token loss divided by it, so gradient accumulation matches one large batch.
            use_shortlist (`bool`, *optional*): restrict the logits to the vocabulary shortlist of the batch (see the
                class docstring); defaults to `config.use_shortlist`. Ignored when `labels` are given (the loss is
                always over the full vocabulary).

        Returns:
            [`Seq2SeqLMOutput`] with `loss` (scalar, when `labels` are given: mean token cross-entropy, or sum /
            `num_items_in_batch`), `logits` (`(batch_size, target_length, decoder_vocab_size)`), `cache`,
            `cross_attentions`, `encoder_last_hidden_state`.

        Raises:
            ValueError: as [`GruAttnModel.forward`], on labels outside the target vocabulary (other than -100) or
                of another shape than `decoder_input_ids`, and on `use_shortlist` without a shortlist or source ids.

        Example:

        ```python
        >>> import torch
        >>> from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
        >>> model = GruAttnForConditionalGeneration(GruAttnConfig(vocab_size=100, embedding_size=16, hidden_size=32))
        >>> out = model(input_ids=torch.tensor([[5, 6, 7, 2]]), labels=torch.tensor([[8, 9, 2]]))
        >>> out.logits.shape
        torch.Size([1, 3, 100])
        ```
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if cache is None:
            cache = past_key_values
        if labels is not None:
            _check_token_ids("labels", labels, self.config.decoder_vocab_size, allow_ignore_index=True)
            if decoder_input_ids is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            elif decoder_input_ids.shape != labels.shape:
                raise ValueError(
                    f"`labels` has shape {tuple(labels.shape)} but `decoder_input_ids` has "
                    f"{tuple(decoder_input_ids.shape)}; they must match position for position."
                )
            use_cache = False

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        features = F.dropout(outputs.last_hidden_state, self.config.dropout, self.training)
        if self.config.tie_word_embeddings:
            features = torch.tanh(self.readout(features))
        shortlist = None
        if (self.config.use_shortlist if use_shortlist is None else use_shortlist) and labels is None:
            shortlist = cache.shortlist if isinstance(cache, GruAttnCache) else None
            if shortlist is None:  # the first decoder step: the batch's candidates, kept in the cache from here on
                shortlist = self._batch_shortlist(input_ids, attention_mask, encoder_outputs)
                if outputs.cache is not None:
                    outputs.cache.shortlist = shortlist
        logits = self._vocabulary_logits(features, shortlist)  # (batch, tgt_len, decoder_vocab_size)

        loss = None
        if labels is not None:
            flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
            if num_items_in_batch is None:
                if (flat_labels == -100).all():
                    raise ValueError("Every position of `labels` is -100: there is no token to compute a loss on.")
                loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
            else:
                if num_items_in_batch <= 0:
                    raise ValueError(f"`num_items_in_batch` must be positive, got {num_items_in_batch}.")
                loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
                loss = loss / num_items_in_batch

        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "GruAttnCache",
    "GruAttnShortlist",
    "GruAttnEncoderOutput",
    "GruAttnForConditionalGeneration",
    "GruAttnModel",
    "GruAttnPreTrainedModel",
]
