"""Convert a `state_dict` of the seed's sample model (`scripts/seed_reference.py`) into a
[`GruAttnForConditionalGeneration`].

The seed model is a 1-layer unidirectional GRU encoder, a decoder started from the encoder's final state, Bahdanau
attention `v^T tanh(W [s; h_j] + b)` recomputed from the concatenation at every step, a decoder GRU on
`[embedding; context]` and an output layer on `[output; context; embedding]`. In `GruAttnConfig` terms that is
`bidirectional_encoder=False`, `encoder_layers=decoder_layers=1`, `encoder_hidden_size=hidden_size`,
`decoder_init="last"`, `attention_type="additive"` with `attention_size=hidden_size`, untied and unshared
embeddings, no dropout. The only weight that changes form is the attention's `W`: since
`W [s; h] + b = W[:, :H] s + W[:, H:] h + b`, it splits into `query_proj` (`W[:, :H]`) and `key_proj`
(`W[:, H:]`, `b`).
"""

import torch

from .configuration_gru_attn import GruAttnConfig
from .modeling_gru_attn import GruAttnForConditionalGeneration


# seed key -> (model key, expected shape as a function of the sizes V_src, V_tgt, E, H)
_SEED_KEYS = {
    "encoder.embedding.weight": ("model.encoder.embed_tokens.weight", lambda s: (s["vs"], s["e"])),
    "encoder.rnn.weight_ih_l0": ("model.encoder.rnn.weight_ih_l0", lambda s: (3 * s["h"], s["e"])),
    "encoder.rnn.weight_hh_l0": ("model.encoder.rnn.weight_hh_l0", lambda s: (3 * s["h"], s["h"])),
    "encoder.rnn.bias_ih_l0": ("model.encoder.rnn.bias_ih_l0", lambda s: (3 * s["h"],)),
    "encoder.rnn.bias_hh_l0": ("model.encoder.rnn.bias_hh_l0", lambda s: (3 * s["h"],)),
    "decoder.embedding.weight": ("model.decoder.embed_tokens.weight", lambda s: (s["vt"], s["e"])),
    "decoder.rnn.weight_ih_l0": ("model.decoder.rnn.weight_ih_l0", lambda s: (3 * s["h"], s["e"] + s["h"])),
    "decoder.rnn.weight_hh_l0": ("model.decoder.rnn.weight_hh_l0", lambda s: (3 * s["h"], s["h"])),
    "decoder.rnn.bias_ih_l0": ("model.decoder.rnn.bias_ih_l0", lambda s: (3 * s["h"],)),
    "decoder.rnn.bias_hh_l0": ("model.decoder.rnn.bias_hh_l0", lambda s: (3 * s["h"],)),
    "decoder.attention.attn.weight": (None, lambda s: (s["h"], 2 * s["h"])),
    "decoder.attention.attn.bias": ("model.decoder.attention.key_proj.bias", lambda s: (s["h"],)),
    "decoder.attention.v.weight": ("model.decoder.attention.energy_proj.weight", lambda s: (1, s["h"])),
    "decoder.fc_out.weight": ("lm_head.weight", lambda s: (s["vt"], 2 * s["h"] + s["e"])),
    "decoder.fc_out.bias": ("lm_head.bias", lambda s: (s["vt"],)),
}


def convert_seed_state_dict(
    state_dict: dict[str, torch.Tensor],
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
) -> GruAttnForConditionalGeneration:
    """
    Builds a [`GruAttnForConditionalGeneration`] whose outputs equal the seed model's for the same weights.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the seed `Seq2Seq` model's `state_dict()`; the keys listed in
            `_SEED_KEYS` (`encoder.embedding.weight`, `encoder.rnn.*_l0`, `decoder.embedding.weight`,
            `decoder.rnn.*_l0`, `decoder.attention.attn.{weight,bias}`, `decoder.attention.v.weight`,
            `decoder.fc_out.{weight,bias}`), floating-point tensors. Sizes are read from the shapes: source and
            target vocabularies from the embeddings, `embedding_size` from the encoder embedding, `hidden_size` from
            the encoder GRU.
        pad_token_id, bos_token_id, eos_token_id (`int`): special ids for the config (the seed has none);
            `decoder_start_token_id` is `bos_token_id`, as in the seed's `greedy`.

    Returns:
        [`GruAttnForConditionalGeneration`] in eval mode (float32), ready for `save_pretrained`.

    Raises:
        ValueError: when keys are missing or unexpected (named in the message), a tensor's shape does not fit the
            sizes read from the others, or a special id is outside the vocabulary.
    """
    missing = [key for key in _SEED_KEYS if key not in state_dict]
    if missing:
        raise ValueError(f"Not a seed checkpoint: missing keys {missing}.")
    unexpected = [key for key in state_dict if key not in _SEED_KEYS]
    if unexpected:
        raise ValueError(
            f"Unexpected keys {unexpected}: the seed model has a 1-layer unidirectional GRU and no other weights."
        )
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"`{key}` must be a floating-point tensor, got {getattr(value, 'dtype', type(value))}.")

    source_vocab, embedding_size = state_dict["encoder.embedding.weight"].shape
    hidden_size = state_dict["encoder.rnn.weight_hh_l0"].shape[1]
    sizes = {"vs": source_vocab, "vt": state_dict["decoder.embedding.weight"].shape[0], "e": embedding_size,
             "h": hidden_size}
    for key, (_, expected) in _SEED_KEYS.items():
        shape = tuple(state_dict[key].shape)
        if shape != expected(sizes):
            raise ValueError(
                f"`{key}` has shape {shape}, expected {expected(sizes)} for source vocabulary {sizes['vs']}, "
                f"target vocabulary {sizes['vt']}, embedding size {embedding_size} and hidden size {hidden_size} "
                "(read from `encoder.embedding.weight`, `decoder.embedding.weight` and `encoder.rnn.weight_hh_l0`)."
            )

    config = GruAttnConfig(
        vocab_size=sizes["vs"],
        decoder_vocab_size=sizes["vt"],
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        encoder_hidden_size=hidden_size,
        encoder_layers=1,
        decoder_layers=1,
        bidirectional_encoder=False,
        attention_type="additive",
        attention_size=hidden_size,
        decoder_init="last",
        share_embeddings=False,
        tie_word_embeddings=False,
        dropout=0.0,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=bos_token_id,
    )
    model = GruAttnForConditionalGeneration(config)

    new_state = {target: state_dict[key] for key, (target, _) in _SEED_KEYS.items() if target is not None}
    attention_weight = state_dict["decoder.attention.attn.weight"]  # (H, 2H) over cat(hidden, encoder_outputs)
    new_state["model.decoder.attention.query_proj.weight"] = attention_weight[:, :hidden_size]
    new_state["model.decoder.attention.key_proj.weight"] = attention_weight[:, hidden_size:]
    new_state = {key: value.detach().float().contiguous() for key, value in new_state.items()}
    model.load_state_dict(new_state, strict=True)
    return model.eval()


__all__ = ["convert_seed_state_dict"]
