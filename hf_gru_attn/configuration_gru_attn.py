"""GRU encoder-decoder with attention: model configuration."""

from transformers import PreTrainedConfig

from .pipeline_gru_attn import custom_pipelines as default_custom_pipelines


ATTENTION_TYPES = ("additive", "dot", "general")
DECODER_INIT_TYPES = ("bridge", "last", "zero")


class GruAttnConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GruAttnForConditionalGeneration`]: an RNN encoder-decoder with attention in the style of
    Bahdanau, Cho & Bengio (2015), "Neural Machine Translation by Jointly Learning to Align and Translate"
    (arXiv:1409.0473), with Luong, Pham & Manning (2015) (arXiv:1508.04025) "dot" and "general" scores as options.

    Architecture: embedding -> (bi)GRU encoder over packed sequences -> decoder state initialised from the encoder
    -> per target step: attention over the encoder outputs (padding masked out) with the previous decoder state as
    query -> GRU on `[embedding; context]` -> readout on `[output; context; embedding]` -> vocabulary logits.

    Args:
        vocab_size (`int`, *optional*, defaults to 8000):
            Source vocabulary size (and target size too unless `decoder_vocab_size` is set).
        decoder_vocab_size (`int`, *optional*):
            Target vocabulary size; `None` means the same as `vocab_size`.
        embedding_size (`int`, *optional*, defaults to 256):
            Size of the source and target token embeddings.
        hidden_size (`int`, *optional*, defaults to 512):
            Decoder GRU state size.
        encoder_hidden_size (`int`, *optional*):
            Encoder GRU state size per direction; `None` means `hidden_size // 2` for a bidirectional encoder and
            `hidden_size` otherwise, so that the encoder outputs have `hidden_size` features either way.
        encoder_layers (`int`, *optional*, defaults to 1):
            Number of stacked encoder GRU layers.
        decoder_layers (`int`, *optional*, defaults to 1):
            Number of stacked decoder GRU layers.
        bidirectional_encoder (`bool`, *optional*, defaults to `True`):
            Run the encoder GRU in both directions and concatenate the two outputs per position.
        attention_type (`str`, *optional*, defaults to `"additive"`):
            `"additive"` (Bahdanau: `v^T tanh(W_q s + W_k h + b)`), `"dot"` (Luong: `s^T h`, needs encoder outputs of
            `hidden_size` features) or `"general"` (Luong: `s^T W h`).
        attention_size (`int`, *optional*):
            Size of the additive attention's hidden layer; `None` means `hidden_size`. Unused by dot/general.
        decoder_init (`str`, *optional*, defaults to `"bridge"`):
            How the decoder's first state is made from the encoder's final states: `"bridge"` (Bahdanau:
            `tanh(W h_final)` from the top encoder layer's final states, both directions concatenated), `"last"`
            (the encoder's final states as they are; needs `encoder_layers == decoder_layers` and encoder outputs of
            `hidden_size` features) or `"zero"`.
        share_embeddings (`bool`, *optional*, defaults to `False`):
            Share one embedding matrix between source and target (joint vocabulary; needs equal vocabulary sizes).
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Tie the output projection to the target embedding (Press & Wolf 2017). The readout is then projected to
            `embedding_size` before the (tied) output layer; when `False` the readout feeds the output layer directly.
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout probability on embeddings, between stacked GRU layers, on encoder outputs and on the readout.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the normal initialiser for embeddings.
        max_source_positions (`int`, *optional*):
            If set, longer sources are truncated to this many tokens with a warning. `None` means no limit.
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token id (its embedding row is kept at zero).
        bos_token_id (`int`, *optional*, defaults to 1):
            Beginning-of-sequence token id.
        eos_token_id (`int`, *optional*, defaults to 2):
            End-of-sequence token id.
        decoder_start_token_id (`int`, *optional*):
            First decoder input token; `None` means `bos_token_id`.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the decoder state as a cache for incremental decoding.
        use_shortlist (`bool`, *optional*, defaults to `False`):
            Decode with the model's lexical shortlist (`shortlist.safetensors`, see [`GruAttnShortlist`]): the output
            layer computes only the batch's candidate target tokens and gives every other token a logit of `-inf`.
            `generate(..., use_shortlist=...)` overrides it per call; training (`labels` given) never uses it.
        custom_pipelines (`dict`, *optional*):
            Pipeline tasks saved into `config.json`, so that
            `pipeline("translation", model=..., trust_remote_code=True)` works (transformers 5.x removed that
            task); `None` means this package's translation pipeline.

    Raises:
        ValueError: if a field has a value outside its allowed range or set (the message names the field and what is
            allowed), or if fields contradict each other (e.g. `"dot"` attention with encoder outputs of another size).

    Example:

    ```python
    >>> from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
    >>> config = GruAttnConfig(vocab_size=1000, embedding_size=32, hidden_size=64)
    >>> model = GruAttnForConditionalGeneration(config)
    ```
    """

    model_type = "gru_attn"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {"num_hidden_layers": "decoder_layers", "d_model": "hidden_size"}

    vocab_size: int = 8000
    decoder_vocab_size: int | None = None
    embedding_size: int = 256
    hidden_size: int = 512
    encoder_hidden_size: int | None = None
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional_encoder: bool = True
    attention_type: str = "additive"
    attention_size: int | None = None
    decoder_init: str = "bridge"
    share_embeddings: bool = False
    tie_word_embeddings: bool = True
    dropout: float = 0.1
    initializer_range: float = 0.1
    max_source_positions: int | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = None
    is_encoder_decoder: bool = True
    use_cache: bool = True
    use_shortlist: bool = False
    custom_pipelines: dict | None = None

    def __post_init__(self, **kwargs):
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        if self.encoder_hidden_size is None:
            self.encoder_hidden_size = self.hidden_size // 2 if self.bidirectional_encoder else self.hidden_size
        if self.attention_size is None:
            self.attention_size = self.hidden_size
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.bos_token_id
        if self.custom_pipelines is None:
            self.custom_pipelines = default_custom_pipelines()
        self._check_fields()
        super().__post_init__(**kwargs)

    @property
    def encoder_output_size(self) -> int:
        """Features per encoder output position: `encoder_hidden_size` times the number of directions."""
        return self.encoder_hidden_size * (2 if self.bidirectional_encoder else 1)

    def _check_fields(self):
        for name in ("vocab_size", "decoder_vocab_size", "embedding_size", "hidden_size", "encoder_hidden_size",
                     "encoder_layers", "decoder_layers", "attention_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GruAttnConfig.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.use_shortlist, bool):
            raise ValueError(f"GruAttnConfig.use_shortlist must be True or False, got {self.use_shortlist!r}.")
        if self.max_source_positions is not None and (
            isinstance(self.max_source_positions, bool)
            or not isinstance(self.max_source_positions, int)
            or self.max_source_positions < 1
        ):
            raise ValueError(
                "GruAttnConfig.max_source_positions must be a positive integer or None, "
                f"got {self.max_source_positions!r}."
            )
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(
                f"GruAttnConfig.attention_type must be one of {ATTENTION_TYPES}, got {self.attention_type!r}."
            )
        if self.decoder_init not in DECODER_INIT_TYPES:
            raise ValueError(
                f"GruAttnConfig.decoder_init must be one of {DECODER_INIT_TYPES}, got {self.decoder_init!r}."
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GruAttnConfig.dropout must be a float in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            raise ValueError(f"GruAttnConfig.initializer_range must be > 0, got {self.initializer_range!r}.")
        if self.attention_type == "dot" and self.encoder_output_size != self.hidden_size:
            raise ValueError(
                "GruAttnConfig.attention_type='dot' needs encoder outputs of "
                f"hidden_size={self.hidden_size} features, but encoder_hidden_size={self.encoder_hidden_size} "
                f"x directions gives {self.encoder_output_size}; "
                "use 'general' or 'additive', or change encoder_hidden_size."
            )
        if self.decoder_init == "last" and (
            self.encoder_layers != self.decoder_layers or self.encoder_output_size != self.hidden_size
        ):
            raise ValueError(
                "GruAttnConfig.decoder_init='last' needs encoder_layers == decoder_layers and encoder outputs of "
                f"hidden_size features; got encoder_layers={self.encoder_layers}, "
                f"decoder_layers={self.decoder_layers}, "
                f"encoder output size {self.encoder_output_size}, hidden_size={self.hidden_size}. "
                "Use decoder_init='bridge' or 'zero'."
            )
        if self.share_embeddings and self.vocab_size != self.decoder_vocab_size:
            raise ValueError(
                "GruAttnConfig.share_embeddings=True needs vocab_size == decoder_vocab_size, got "
                f"{self.vocab_size} and {self.decoder_vocab_size}."
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            # pad is used on both sides; the other special ids are target tokens
            limit = self.decoder_vocab_size
            if name == "pad_token_id":
                limit = min(self.vocab_size, limit)
            ids = getattr(self, name)
            for value in ids if isinstance(ids, list) else [ids]:
                valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit
                if value is not None and not valid:
                    raise ValueError(f"GruAttnConfig.{name} must be an id in [0, {limit}) or None, got {ids!r}.")

__all__ = ["GruAttnConfig"]
