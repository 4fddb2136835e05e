"""Property-based tests (hypothesis) of the GRU attention model's invariants, over random lengths and batches.

For random sources and targets (1-9 tokens), batch compositions (1-4 sentences) and padding sides, on tiny random
models of each attention type:

- a sentence's logits and its greedy / beam-search output do not depend on its batch neighbours or on the padding
  side: they equal the sentence run alone (no padding at all);
- decoding incrementally with the recurrent cache, in chunks of random sizes, gives the logits of the full
  teacher-forced forward pass;
- every beam-search `sequences_scores` equals the log-probability of its hypothesis recomputed by a teacher-forced
  forward pass: `sum(log p(token)) / len ** length_penalty` over the tokens after the decoder start, through EOS
  (transformers 5.24's normalisation, see tests/test_generation.py).

Expected values come from separate forward passes of single unpadded sentences, never from the code path under test.
"""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_gru_attn import GruAttnConfig, GruAttnEncoderOutput, GruAttnForConditionalGeneration


PAD, BOS, EOS = 0, 1, 2
VOCAB = 24
CONFIGS = [
    {"attention_type": "additive", "bidirectional_encoder": True},
    {"attention_type": "general", "bidirectional_encoder": False, "encoder_layers": 2, "decoder_layers": 2},
    {"attention_type": "dot", "bidirectional_encoder": True, "decoder_init": "zero", "share_embeddings": True},
]
ATOL = 1e-5
PROPERTY_SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)

source_tokens = st.lists(st.integers(EOS, VOCAB - 1), min_size=1, max_size=9)  # EOS may occur, as the tokenizer's
target_tokens = st.lists(st.integers(EOS, VOCAB - 1), min_size=1, max_size=9)
pairs = st.lists(st.tuples(source_tokens, target_tokens), min_size=1, max_size=4)
model_index = st.integers(0, len(CONFIGS) - 1)
padding_side = st.sampled_from(["left", "right"])


@functools.cache
def tiny_model(index: int) -> GruAttnForConditionalGeneration:
    """
    A seeded random model (embedding 8, hidden 12) in eval mode. Embeddings of standard deviation 1 (not 0.1) make
    the next-token distributions depend strongly on the input, so that beams branch and get reordered; EOS is made
    likely enough to end some outputs early.
    """
    torch.manual_seed(index)
    config = GruAttnConfig(
        vocab_size=VOCAB, embedding_size=8, hidden_size=12, dropout=0.0, initializer_range=1.0, **CONFIGS[index]
    )
    model = GruAttnForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.bias[EOS] += 1.5
    return model


def pad(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(ids, mask)`: rows padded with PAD to the longest on `side`; mask 1 on real tokens."""
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        fill = [PAD] * (width - len(row))
        ids.append(fill + row if side == "left" else row + fill)
        mask.append([0] * len(fill) + [1] * len(row) if side == "left" else [1] * len(row) + [0] * len(fill))
    return torch.tensor(ids), torch.tensor(mask)


def decoder_inputs(targets: list[list[int]]) -> torch.Tensor:
    """Teacher-forcing inputs: BOS then each target, right-padded (the decoder is causal)."""
    return pad([[BOS, *target] for target in targets], "right")[0]


def logits_alone(model, source: list[int], target: list[int]) -> torch.Tensor:
    """`(len(target) + 1, vocab)` logits of one unpadded sentence."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([[BOS, *target]])).logits[0]


def generated_tokens(sequence: torch.Tensor) -> list[int]:
    """Generated tokens after the decoder start, through the first EOS (all of them if there is none)."""
    tokens = sequence[1:].tolist()
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


@PROPERTY_SETTINGS
@given(index=model_index, batch=pairs, side=padding_side)
def test_logits_do_not_depend_on_batch_neighbours_or_padding(index, batch, side):
    model = tiny_model(index)
    sources, targets = zip(*batch)
    input_ids, attention_mask = pad(list(sources), side)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_inputs(targets))
    for row, (source, target) in enumerate(batch):
        expected = logits_alone(model, source, target)
        torch.testing.assert_close(logits.logits[row, : len(target) + 1], expected, rtol=0, atol=ATOL)


@PROPERTY_SETTINGS
@given(
    index=model_index,
    sources=st.lists(source_tokens, min_size=1, max_size=4),
    side=padding_side,
    num_beams=st.sampled_from([1, 3]),
)
def test_generated_tokens_do_not_depend_on_batch_neighbours_or_padding(index, sources, side, num_beams):
    model = tiny_model(index)
    kwargs = {"num_beams": num_beams, "do_sample": False, "max_new_tokens": 6, "early_stopping": True}
    input_ids, attention_mask = pad(sources, side)
    with torch.no_grad():
        batched = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        alone = [model.generate(torch.tensor([source]), **kwargs)[0] for source in sources]
    for row, expected in enumerate(alone):
        assert generated_tokens(batched[row]) == generated_tokens(expected), row


@PROPERTY_SETTINGS
@given(index=model_index, batch=pairs, side=padding_side, chunk_sizes=st.lists(st.integers(1, 4), min_size=10))
def test_cached_incremental_decoding_equals_the_full_forward(index, batch, side, chunk_sizes):
    model = tiny_model(index)
    sources, targets = zip(*batch)
    input_ids, attention_mask = pad(list(sources), side)
    decoder_input_ids = decoder_inputs(targets)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        encoder_outputs = model.get_encoder()(input_ids, attention_mask)
        assert isinstance(encoder_outputs, GruAttnEncoderOutput)
        pieces, cache, start = [], None, 0
        for size in chunk_sizes:
            if start >= decoder_input_ids.shape[1]:
                break
            out = model(
                encoder_outputs=encoder_outputs,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids[:, start : start + size],
                cache=cache,
                use_cache=True,
            )
            pieces.append(out.logits)
            cache, start = out.cache, start + size
    assert start >= decoder_input_ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=ATOL)
    assert cache.get_seq_length() == decoder_input_ids.shape[1]


@PROPERTY_SETTINGS
@given(
    index=model_index,
    sources=st.lists(source_tokens, min_size=1, max_size=3),
    num_beams=st.integers(2, 4),
    length_penalty=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    max_new_tokens=st.integers(1, 7),
    early_stopping=st.booleans(),
)
def test_beam_scores_equal_recomputed_log_probabilities(
    index, sources, num_beams, length_penalty, max_new_tokens, early_stopping
):
    model = tiny_model(index)
    input_ids, attention_mask = pad(sources, "right")
    with torch.no_grad():
        out = model.generate(
            input_ids, attention_mask=attention_mask, num_beams=num_beams, num_return_sequences=num_beams,
            max_new_tokens=max_new_tokens, length_penalty=length_penalty, early_stopping=early_stopping,
            output_scores=True, return_dict_in_generate=True,
        )
    assert out.sequences.shape[0] == len(sources) * num_beams
    for row, (sequence, score) in enumerate(zip(out.sequences, out.sequences_scores)):
        tokens = generated_tokens(sequence)
        log_probs = logits_alone(model, sources[row // num_beams], tokens[:-1]).log_softmax(-1)
        total = log_probs.gather(1, torch.tensor(tokens)[:, None]).sum().item()
        assert score.item() == pytest.approx(total / len(tokens) ** length_penalty, abs=1e-4), (row, tokens)
