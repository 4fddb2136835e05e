"""GruAttnConfig: derived defaults, validation (each bad field raises ValueError naming it), round trips."""

import json

import pytest
from transformers import AutoConfig, GenerationConfig

from hf_gru_attn import GruAttnConfig


def test_derived_defaults_unidirectional():
    config = GruAttnConfig(vocab_size=50, hidden_size=10, bidirectional_encoder=False, bos_token_id=3)
    assert config.decoder_vocab_size == 50
    assert config.encoder_hidden_size == 10
    assert config.encoder_output_size == 10
    assert config.attention_size == 10
    assert config.decoder_start_token_id == 3


def test_derived_defaults_bidirectional():
    config = GruAttnConfig(vocab_size=50, hidden_size=10)
    assert config.bidirectional_encoder is True
    assert config.encoder_hidden_size == 5
    assert config.encoder_output_size == 10  # 5 per direction, two directions


def test_explicit_values_are_kept():
    config = GruAttnConfig(
        vocab_size=50, decoder_vocab_size=60, hidden_size=10, encoder_hidden_size=7, attention_size=4,
        bos_token_id=1, decoder_start_token_id=5,
    )
    assert (config.decoder_vocab_size, config.encoder_hidden_size, config.attention_size) == (60, 7, 4)
    assert config.encoder_output_size == 14
    assert config.decoder_start_token_id == 5
    assert config.is_encoder_decoder is True
    assert config.model_type == "gru_attn"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 2.5}, "vocab_size"),
        ({"decoder_vocab_size": -3}, "decoder_vocab_size"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"encoder_hidden_size": 0}, "encoder_hidden_size"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"decoder_layers": -1}, "decoder_layers"),
        ({"attention_size": 0}, "attention_size"),
        ({"max_source_positions": 0}, "max_source_positions"),
        ({"attention_type": "bahdanau"}, "attention_type"),
        ({"decoder_init": "mean"}, "decoder_init"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"initializer_range": 0.0}, "initializer_range"),
        ({"pad_token_id": 100}, "pad_token_id"),
        ({"bos_token_id": -1}, "bos_token_id"),
        ({"eos_token_id": 100}, "eos_token_id"),
        ({"decoder_start_token_id": 100}, "decoder_start_token_id"),
        # pad is used on both sides, so it must fit the smaller vocabulary
        ({"decoder_vocab_size": 10, "pad_token_id": 20}, "pad_token_id"),
        # contradictions between fields
        ({"attention_type": "dot", "bidirectional_encoder": False, "encoder_hidden_size": 8}, "attention_type"),
        ({"decoder_init": "last", "encoder_layers": 2, "decoder_layers": 1}, "decoder_init"),
        ({"decoder_init": "last", "bidirectional_encoder": False, "encoder_hidden_size": 8}, "decoder_init"),
        ({"share_embeddings": True, "decoder_vocab_size": 60}, "share_embeddings"),
    ],
)
def test_invalid_field_raises_value_error_naming_it(kwargs, field):
    base = {"vocab_size": 50, "hidden_size": 16}
    with pytest.raises(ValueError, match=rf"GruAttnConfig\.{field}\b"):
        GruAttnConfig(**{**base, **kwargs})


def test_attention_type_message_lists_allowed_values():
    with pytest.raises(ValueError) as error:
        GruAttnConfig(attention_type="luong")
    for allowed in ("additive", "dot", "general"):
        assert allowed in str(error.value)


@pytest.mark.parametrize("attention_type", ["additive", "dot", "general"])
@pytest.mark.parametrize("decoder_init", ["bridge", "last", "zero"])
def test_valid_combinations_are_accepted(attention_type, decoder_init):
    config = GruAttnConfig(
        vocab_size=50, hidden_size=16, attention_type=attention_type, decoder_init=decoder_init,
        encoder_layers=2, decoder_layers=2,
    )
    assert (config.attention_type, config.decoder_init) == (attention_type, decoder_init)


def test_round_trip_to_dict_and_from_pretrained(tmp_path):
    config = GruAttnConfig(
        vocab_size=50, decoder_vocab_size=70, embedding_size=6, hidden_size=10, encoder_layers=2,
        decoder_layers=3, bidirectional_encoder=False, encoder_hidden_size=9, attention_type="general",
        attention_size=5, decoder_init="zero", tie_word_embeddings=False, dropout=0.25,
        initializer_range=0.05, max_source_positions=128, pad_token_id=3, bos_token_id=4, eos_token_id=5,
        decoder_start_token_id=6,
    )
    saved = config.to_dict()
    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == "gru_attn"

    for loaded in (GruAttnConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is GruAttnConfig
        reloaded = loaded.to_dict()
        for key in ("vocab_size", "decoder_vocab_size", "embedding_size", "hidden_size", "encoder_hidden_size",
                    "encoder_layers", "decoder_layers", "bidirectional_encoder", "attention_type",
                    "attention_size", "decoder_init", "share_embeddings", "tie_word_embeddings", "dropout",
                    "initializer_range", "max_source_positions", "pad_token_id", "bos_token_id", "eos_token_id",
                    "decoder_start_token_id", "is_encoder_decoder"):
            assert reloaded[key] == saved[key], key
        assert reloaded["decoder_layers"] == 3 and reloaded["decoder_start_token_id"] == 6

    rebuilt = GruAttnConfig.from_dict(saved)
    assert rebuilt.encoder_output_size == 9 and rebuilt.attention_type == "general"


def test_invalid_config_json_is_rejected_on_load(tmp_path):
    GruAttnConfig(vocab_size=50, hidden_size=16).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["attention_type"] = "cosine"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"GruAttnConfig\.attention_type"):
        GruAttnConfig.from_pretrained(tmp_path)


def test_generation_config_takes_special_ids_from_config():
    config = GruAttnConfig(vocab_size=50, hidden_size=16, pad_token_id=7, bos_token_id=8, eos_token_id=9)
    generation_config = GenerationConfig.from_model_config(config)
    assert generation_config.decoder_start_token_id == 8  # defaults to bos
    assert generation_config.eos_token_id == 9
    assert generation_config.pad_token_id == 7
