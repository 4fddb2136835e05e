"""`generate()` over the recurrent GRU state (issue 4; bug cases BL-03, BL-17, BL-23).

Every expected value is worked out independently of `generate()`: hand-written argmax loops that recompute the full
teacher-forced forward pass at each step (no cache), teacher-forced log-probabilities of each returned hypothesis,
or a fixed distribution with scores computed by hand.

How transformers 5.24 normalises beam scores (read in `generation/utils.py`, `_beam_search` ->
`_update_finished_beams`): a hypothesis that finishes when the token chosen at loop length `cur_len` is appended gets
`sum_logprobs / (cur_len + 1 - decoder_prompt_len) ** length_penalty`, where `decoder_prompt_len` is the decoder
input length at the start (1 here: the decoder start token). So `generated_len` counts the generated tokens after the
decoder start, EOS included, and neither the decoder start nor the source (encoder) length; a hypothesis cut by
`max_length` without EOS counts all its generated tokens. `sum_logprobs` is the sum of the *processed* log-probs
(log-softmax, then the logits processors). Finished beam rows are filled with `pad_token_id or eos_token_id`, i.e.
with EOS when `pad_token_id == 0`, so hypotheses are read up to their first EOS, never by stripping pad.
"""

import json
import logging as logging_module
import math

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerFast, TextStreamer
from transformers.utils import logging

from hf_gru_attn import GruAttnCache, GruAttnConfig, GruAttnEncoderOutput, GruAttnForConditionalGeneration


PAD, BOS, EOS, UNK = 0, 1, 2, 3
VOCAB_SIZE = 24
# Three sources of lengths 3, 9 and 5 with disjoint content (BL-17), EOS-terminated like the package tokenizer's.
SOURCES = [[5, 6, 2], [8, 9, 10, 11, 12, 13, 14, 15, 2], [16, 17, 18, 19, 2]]
WORDS = [
    "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "small",
    "red", "blue", "house", "tree", "and", "or", "fast", "slow", "up", "down",
]


def make_model(seed: int = 0, eos_bias: float = 0.0, **overrides) -> GruAttnForConditionalGeneration:
    """A tiny seeded model in eval mode: 2 decoder layers (so the cache holds a multi-layer state), dropout on (so
    eval mode matters), `initializer_range=1.0` so that argmax decisions have clear margins. `eos_bias` is added to the
    EOS output bias to make the model stop early (or never, with a large negative value)."""
    torch.manual_seed(seed)
    kwargs = {
        "vocab_size": VOCAB_SIZE, "embedding_size": 8, "hidden_size": 16, "decoder_layers": 2, "dropout": 0.1,
        "initializer_range": 1.0, **overrides,
    }
    model = GruAttnForConditionalGeneration(GruAttnConfig(**kwargs)).eval()
    if eos_bias:
        with torch.no_grad():
            model.lm_head.bias[EOS] += eos_bias
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


def pad_batch(sources, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """`(input_ids, attention_mask)` for `sources` padded with PAD on `side`."""
    width = max(len(s) for s in sources)
    rows = [s + [PAD] * (width - len(s)) if side == "right" else [PAD] * (width - len(s)) + s for s in sources]
    masks = [
        [1] * len(s) + [0] * (width - len(s)) if side == "right" else [0] * (width - len(s)) + [1] * len(s)
        for s in sources
    ]
    return torch.tensor(rows), torch.tensor(masks)


@pytest.fixture(scope="module")
def batch():
    return pad_batch(SOURCES)


def forward_logits(model, input_ids, attention_mask, decoder_input_ids, **kwargs) -> torch.Tensor:
    """Teacher-forced logits over the whole decoder input, recomputed from scratch (no cache)."""
    with torch.no_grad():
        return model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            use_cache=False, **kwargs,
        ).logits


def greedy_reference(model, input_ids, attention_mask, max_new_tokens, adjust=None) -> torch.Tensor:
    """Hand-written greedy decoding: at every step the full teacher-forced forward pass over the prefix is recomputed
    and the argmax of the last position is appended; rows that have emitted EOS continue with PAD (as `generate()`
    does); stops when every row has finished or after `max_new_tokens`. `adjust(prefix, logits)` may modify the
    last-position logits first (a hand-written logits processor)."""
    sequences = torch.full((input_ids.shape[0], 1), model.config.decoder_start_token_id)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = forward_logits(model, input_ids, attention_mask, sequences)[:, -1]
        if adjust is not None:
            logits = adjust(sequences, logits)
        next_tokens = torch.where(finished, PAD, logits.argmax(-1))
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        finished |= next_tokens == EOS
        if finished.all():
            break
    return sequences


def hypothesis(row: torch.Tensor) -> list[int]:
    """The generated tokens of one output row: after the decoder start, through the first EOS (what follows is
    padding), or all of them when the row has no EOS (cut by the length limit)."""
    tokens = row[1:].tolist()
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def hypothesis_log_prob(model, source: list[int], tokens: list[int]) -> float:
    """Teacher-forced sum of the log-probabilities of `tokens` given `source`, decoder start prepended."""
    decoder_input_ids = torch.tensor([[model.config.decoder_start_token_id] + tokens[:-1]])
    log_probs = forward_logits(model, torch.tensor([source]), None, decoder_input_ids)[0].log_softmax(-1)
    return log_probs.gather(1, torch.tensor(tokens)[:, None]).sum().item()


def has_repeated_ngram(tokens: list[int], n: int) -> bool:
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `WORDS` with pad=0, `<s>`=1, `</s>`=2 (appended to every input), `<unk>`=3."""
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": UNK}
    vocab.update({word: index + 4 for index, word in enumerate(WORDS)})
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


# --------------------------------------------------------------------------------------------- greedy and beams


@pytest.mark.parametrize(
    "kwargs", [{"num_beams": 1}, {"num_beams": 1, "do_sample": False}, {"num_beams": 1, "use_cache": False}]
)
def test_greedy_equals_handwritten_argmax_loop(model, batch, kwargs):
    input_ids, attention_mask = batch
    expected = greedy_reference(model, input_ids, attention_mask, max_new_tokens=12)
    # the reference exercises both a row that stops with EOS (then PAD) and one cut by the length limit
    stopped = (expected == EOS).any(dim=1)
    assert stopped.any() and not stopped.all()
    out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=12, **kwargs)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_with_cache_equals_without_cache(model, batch, early_stopping):
    input_ids, attention_mask = batch
    kwargs = {
        "attention_mask": attention_mask, "num_beams": 4, "num_return_sequences": 4, "max_new_tokens": 10,
        "early_stopping": early_stopping, "output_scores": True, "return_dict_in_generate": True,
    }
    cached = model.generate(input_ids, use_cache=True, **kwargs)
    recomputed = model.generate(input_ids, use_cache=False, **kwargs)
    assert isinstance(cached.cache, GruAttnCache) and recomputed.cache is None
    assert torch.equal(cached.sequences, recomputed.sequences)
    torch.testing.assert_close(cached.sequences_scores, recomputed.sequences_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_scores_equal_teacher_forced_log_prob(model, batch, length_penalty):
    """BL-23 score identity: `sequences_scores == sum(logprobs after the decoder start, through EOS) / len ** lp`."""
    input_ids, attention_mask = batch
    num_beams = 4
    out = model.generate(
        input_ids, attention_mask=attention_mask, num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=10, length_penalty=length_penalty, early_stopping=False,
        output_scores=True, return_dict_in_generate=True,
    )
    assert out.sequences.shape[0] == len(SOURCES) * num_beams
    lengths = set()
    for row, (sequence, score) in enumerate(zip(out.sequences, out.sequences_scores)):
        source = SOURCES[row // num_beams]
        tokens = hypothesis(sequence)
        lengths.add((len(tokens), tokens[-1] == EOS))
        expected = hypothesis_log_prob(model, source, tokens) / len(tokens) ** length_penalty
        assert score.item() == pytest.approx(expected, abs=1e-4), (row, tokens)
    # hypotheses of several lengths, finished by EOS and cut at max_new_tokens, were all checked
    assert len({length for length, _ in lengths}) > 1 and {ended for _, ended in lengths} == {True, False}
    # returned best first, per source
    per_source = out.sequences_scores.view(len(SOURCES), num_beams)
    assert torch.all(per_source[:, :-1] >= per_source[:, 1:])


class FixedDistribution(LogitsProcessor):
    """BL-23: replaces the model's scores by a fixed distribution over the generated prefix A=5, B=6, C=7:
    start: P(EOS)=P(A)=0.5; after A: P(B)=0.9, P(EOS)=0.1; after A B: P(EOS)=0.9, P(C)=0.1; otherwise P(EOS)=1."""

    A, B, C = 5, 6, 7

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        new_scores = torch.full_like(scores, -1e4)
        for row, prefix in enumerate(input_ids[:, 1:].tolist()):
            if prefix == []:
                table = {EOS: 0.5, self.A: 0.5}
            elif prefix == [self.A]:
                table = {self.B: 0.9, EOS: 0.1}
            elif prefix == [self.A, self.B]:
                table = {EOS: 0.9, self.C: 0.1}
            else:
                table = {EOS: 1.0}
            for token, probability in table.items():
                new_scores[row, token] = torch.log(torch.tensor(probability))
        return new_scores


@pytest.mark.parametrize(
    "length_penalty, best, second",
    [
        # [A, B, EOS]: (ln .5 + ln .9 + ln .9) / 3 = -0.3013 beats [EOS]: ln .5 / 1 = -0.6931
        (1.0, [5, 6, EOS], [EOS]),
        # without normalisation the one-token [EOS] (-0.6931) beats [A, B, EOS] (-0.9038)
        (0.0, [EOS], [5, 6, EOS]),
    ],
)
def test_bl23_length_penalty_with_fixed_distribution(model, length_penalty, best, second):
    expected = {
        (EOS,): math.log(0.5),
        (5, 6, EOS): math.log(0.5) + 2 * math.log(0.9),
    }
    out = model.generate(
        torch.tensor([SOURCES[0]]), num_beams=2, num_return_sequences=2, early_stopping=False, max_new_tokens=6,
        length_penalty=length_penalty, logits_processor=LogitsProcessorList([FixedDistribution()]),
        output_scores=True, return_dict_in_generate=True,
    )
    assert [hypothesis(row) for row in out.sequences] == [best, second]
    for tokens, score in zip([best, second], out.sequences_scores.tolist()):
        assert score == pytest.approx(expected[tuple(tokens)] / len(tokens) ** length_penalty, abs=1e-4)
    assert out.sequences_scores[0].item() == pytest.approx(-0.301 if length_penalty == 1.0 else -0.693, abs=1e-3)


def test_bl17_beam_results_do_not_depend_on_the_batch(model, batch):
    input_ids, attention_mask = batch
    kwargs = {"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 10, "output_scores": True,
              "return_dict_in_generate": True}
    batched = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    alone_hypotheses = []
    for k, source in enumerate(SOURCES):
        alone = model.generate(torch.tensor([source]), **kwargs)
        alone_hypotheses.append([hypothesis(row) for row in alone.sequences])
        assert [hypothesis(row) for row in batched.sequences[2 * k : 2 * k + 2]] == alone_hypotheses[-1]
        torch.testing.assert_close(batched.sequences_scores[2 * k : 2 * k + 2], alone.sequences_scores,
                                   rtol=0, atol=1e-5)
    # the sources get clearly different hypotheses, so a mix-up between sentences could not go unnoticed
    assert alone_hypotheses[0] != alone_hypotheses[1] != alone_hypotheses[2] != alone_hypotheses[0]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_sentence_alone_and_in_padded_batch_give_same_tokens(model, side, num_beams):
    input_ids, attention_mask = pad_batch(SOURCES, side)
    batched = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=10)
    for k, source in enumerate(SOURCES):
        alone = model.generate(torch.tensor([source]), num_beams=num_beams, max_new_tokens=10)
        assert hypothesis(batched[k]) == hypothesis(alone[0])


# ----------------------------------------------------------------------------------------- outputs and scores


def test_cross_attentions_per_step_greedy(model, batch):
    input_ids, attention_mask = batch
    out = model.generate(
        input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=8,
        output_attentions=True, return_dict_in_generate=True,
    )
    steps = out.sequences.shape[1] - 1
    assert isinstance(out.cross_attentions, tuple) and len(out.cross_attentions) == steps
    for step in out.cross_attentions:
        assert isinstance(step, tuple) and len(step) == 1  # one attention layer
        assert step[0].shape == (len(SOURCES), 1, 1, input_ids.shape[1])
    weights = torch.cat([step[0] for step in out.cross_attentions], dim=2)  # (batch, 1, steps, source_length)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(SOURCES), 1, steps), rtol=0, atol=1e-5)
    assert torch.all(weights.masked_select(attention_mask[:, None, None, :] == 0) == 0)
    # the same weights as a teacher-forced forward over the generated sequence (finished rows fed PAD either way)
    with torch.no_grad():
        forward = model(input_ids=input_ids, attention_mask=attention_mask,
                        decoder_input_ids=out.sequences[:, :-1], output_attentions=True, use_cache=False)
    torch.testing.assert_close(weights, forward.cross_attentions[0], rtol=0, atol=1e-6)


def test_cross_attentions_per_step_beam(model, batch):
    input_ids, attention_mask = batch
    num_beams = 3
    out = model.generate(
        input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=6,
        output_attentions=True, return_dict_in_generate=True,
    )
    padding = (attention_mask == 0).repeat_interleave(num_beams, dim=0)
    assert len(out.cross_attentions) >= out.sequences.shape[1] - 1
    for step in out.cross_attentions:
        weights = step[0]
        assert weights.shape == (len(SOURCES) * num_beams, 1, 1, input_ids.shape[1])
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)), rtol=0, atol=1e-5)
        assert torch.all(weights[:, 0, 0][padding] == 0)


def test_transition_scores_greedy_equal_forward_log_softmax(model, batch):
    input_ids, attention_mask = batch
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=8,
                         output_scores=True, return_dict_in_generate=True)
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    log_probs = forward_logits(model, input_ids, attention_mask, out.sequences[:, :-1]).log_softmax(-1)
    expected = log_probs.gather(2, out.sequences[:, 1:, None]).squeeze(2)
    torch.testing.assert_close(transition, expected, rtol=0, atol=1e-5)


def test_transition_scores_beam_sum_to_sequence_scores(model, batch):
    input_ids, attention_mask = batch
    length_penalty, num_beams = 2.0, 3
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams,
                         num_return_sequences=num_beams, max_new_tokens=8, length_penalty=length_penalty,
                         output_scores=True, return_dict_in_generate=True)
    transition = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    lengths = torch.tensor([len(hypothesis(row)) for row in out.sequences], dtype=torch.float)
    torch.testing.assert_close(transition.sum(1), out.sequences_scores * lengths**length_penalty,
                               rtol=0, atol=1e-4)


def test_precomputed_encoder_outputs_give_same_output(model, batch):
    input_ids, attention_mask = batch
    for num_beams in (1, 3):
        # fresh encoder outputs per call: generate() expands the passed ModelOutput for beams *in place* (transformers
        # behaviour for every encoder-decoder), so one object cannot be reused for a second beam search
        with torch.no_grad():
            encoder_outputs = model.get_encoder()(input_ids, attention_mask)
        assert isinstance(encoder_outputs, GruAttnEncoderOutput)
        expected = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=8)
        out = model.generate(encoder_outputs=encoder_outputs, attention_mask=attention_mask, num_beams=num_beams,
                             max_new_tokens=8)
        assert torch.equal(out, expected)


def test_forward_accepts_cache_and_past_key_values(model, batch):
    input_ids, attention_mask = batch
    prefix = torch.tensor([[BOS, 7], [BOS, 9], [BOS, 11]])
    next_token = torch.tensor([[12], [13], [14]])
    full = forward_logits(model, input_ids, attention_mask, torch.cat([prefix, next_token], dim=1))[:, -1]
    step_logits = {}
    for name in ("cache", "past_key_values"):
        with torch.no_grad():
            first = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=prefix, use_cache=True)
            assert isinstance(first.cache, GruAttnCache) and first.cache.get_seq_length() == 2
            step = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=next_token,
                         use_cache=True, **{name: first.cache})
        assert step.cache.get_seq_length() == 3
        step_logits[name] = step.logits[:, -1]
    assert torch.equal(step_logits["cache"], step_logits["past_key_values"])
    torch.testing.assert_close(step_logits["cache"], full, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "beam_idx", [[1, 0, 0, 2, 4, 3], [0, 1, 2, 3, 4, 5], [3, 0, 1, 2, 4, 5], [5, 5, 5, 0, 0, 0]]
)
def test_cache_reorder_equals_index_select_and_skips_identical_keys(beam_idx):
    # Rows 0-2 and 3-5 are the beams of two sentences (identical keys within each); reordering must give what
    # index_select gives, and leave the keys tensor alone when every row keeps keys equal to its own.
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 4)
    keys = torch.randn(2, 3, 5).repeat_interleave(3, dim=0)
    beam_idx = torch.tensor(beam_idx)
    cache = GruAttnCache(hidden.clone(), keys.clone(), seq_length=1)
    keys_before = cache.keys
    cache.reorder_cache(beam_idx)
    assert torch.equal(cache.hidden, hidden[:, beam_idx]) and torch.equal(cache.keys, keys[beam_idx])
    within_sentences = bool((beam_idx // 3 == torch.arange(6) // 3).all())
    assert (cache.keys is keys_before) == within_sentences
    # a second reorder after a cross-sentence one still tracks which rows share keys
    cache.reorder_cache(torch.tensor([2, 1, 0, 5, 4, 3]))
    assert torch.equal(cache.keys, keys[beam_idx][[2, 1, 0, 5, 4, 3]])


# ------------------------------------------------------------------------------------------------ sampling


def test_top_k_1_sampling_equals_greedy(model, batch):
    input_ids, attention_mask = batch
    expected = greedy_reference(model, input_ids, attention_mask, max_new_tokens=10)
    torch.manual_seed(123)
    out = model.generate(input_ids, attention_mask=attention_mask, do_sample=True, top_k=1, num_beams=1,
                         max_new_tokens=10)
    assert torch.equal(out, expected)


def test_sampling_is_reproducible_and_respects_top_k(model, batch):
    input_ids, attention_mask = batch
    kwargs = {"attention_mask": attention_mask, "do_sample": True, "num_beams": 1, "temperature": 0.7, "top_k": 5,
              "top_p": 0.9, "max_new_tokens": 10}
    torch.manual_seed(7)
    first = model.generate(input_ids, **kwargs)
    torch.manual_seed(7)
    second = model.generate(input_ids, **kwargs)
    assert torch.equal(first, second)
    # every sampled token is among the 5 most likely ones of the teacher-forced forward pass at its step
    top5 = forward_logits(model, input_ids, attention_mask, first[:, :-1]).topk(5, dim=-1).indices
    for row in range(len(SOURCES)):
        for position, token in enumerate(hypothesis(first[row])):
            assert token in top5[row, position].tolist()


def test_num_return_sequences_shapes_and_order(model, batch):
    input_ids, attention_mask = batch
    beams = model.generate(input_ids, attention_mask=attention_mask, num_beams=4, num_return_sequences=3,
                           max_new_tokens=6)
    assert beams.shape[0] == len(SOURCES) * 3 and beams.shape[1] <= 7
    torch.manual_seed(0)
    samples = model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1, top_k=1,
                             num_return_sequences=3, max_new_tokens=6)
    assert samples.shape[0] == len(SOURCES) * 3
    # with top_k=1 every sample equals the greedy output of its own source: rows 3k..3k+2 belong to source k
    greedy = greedy_reference(model, input_ids, attention_mask, max_new_tokens=6)
    assert torch.equal(samples, greedy.repeat_interleave(3, dim=0))


# ------------------------------------------------------------------------------------- logits processors


def test_never_emitting_eos_stops_at_max_new_tokens(batch):
    input_ids, attention_mask = batch
    eager = make_model(eos_bias=4.0)  # stops almost at once when EOS is allowed
    free = eager.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=7)
    assert free.shape[1] < 8
    # transformers' NoBadWordsLogitsProcessor silently drops single-token EOS entries from `bad_words_ids`, so
    # `bad_words_ids=[[eos]]` changes nothing; `suppress_tokens=[eos]` is the way to forbid EOS
    ignored = eager.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=7,
                             bad_words_ids=[[EOS]])
    assert torch.equal(ignored, free)
    for num_beams in (1, 3):
        out = eager.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=7,
                             suppress_tokens=[EOS])
        assert out.shape == (len(SOURCES), 1 + 7)
        assert not (out == EOS).any()


def test_max_new_tokens_equals_max_length_minus_start(model, batch):
    input_ids, attention_mask = batch
    by_new = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=11)
    by_length = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_length=12)
    assert torch.equal(by_new, by_length)
    assert torch.equal(by_new, greedy_reference(model, input_ids, attention_mask, max_new_tokens=11))


def test_min_new_tokens_blocks_eos_before(batch):
    input_ids, attention_mask = batch
    eager = make_model(eos_bias=4.0)
    min_new = 4

    def no_eos_yet(prefix, logits):
        logits = logits.clone()
        if prefix.shape[1] - 1 < min_new:
            logits[:, EOS] = -float("inf")
        return logits

    expected = greedy_reference(eager, input_ids, attention_mask, max_new_tokens=10, adjust=no_eos_yet)
    out = eager.generate(input_ids, attention_mask=attention_mask, num_beams=1, min_new_tokens=min_new,
                         max_new_tokens=10)
    assert torch.equal(out, expected)
    assert not (out[:, 1 : 1 + min_new] == EOS).any()
    assert (out[:, 1 + min_new] == EOS).all()  # the eager model stops as soon as it may
    beams = eager.generate(input_ids, attention_mask=attention_mask, num_beams=3, min_new_tokens=min_new,
                           max_new_tokens=10)
    assert all(len(hypothesis(row)) > min_new for row in beams)


def test_no_repeat_ngram_size(model, batch):
    input_ids, attention_mask = batch
    plain = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=12)
    assert any(has_repeated_ngram([BOS] + hypothesis(row), 2) for row in plain)  # the test has power
    for num_beams in (1, 3):
        out = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=12,
                             no_repeat_ngram_size=2)
        for row in out:
            assert not has_repeated_ngram([BOS] + hypothesis(row), 2)


def test_repetition_penalty_matches_handwritten_processor(model, batch):
    input_ids, attention_mask = batch
    penalty = 1.5

    def penalise_seen(prefix, logits):
        """CTRL's rule (Keskar et al. 2019) as transformers applies it: every token already in the decoder input,
        decoder start included, has its logit divided by `penalty` if positive, multiplied if negative."""
        logits = logits.clone()
        for row, tokens in enumerate(prefix.tolist()):
            for token in set(tokens):
                value = logits[row, token]
                logits[row, token] = value / penalty if value > 0 else value * penalty
        return logits

    expected = greedy_reference(model, input_ids, attention_mask, max_new_tokens=12, adjust=penalise_seen)
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=12,
                         repetition_penalty=penalty)
    assert torch.equal(out, expected)
    assert not torch.equal(out, greedy_reference(model, input_ids, attention_mask, max_new_tokens=12))


def test_bad_words_ids_never_emitted(model, batch):
    input_ids, attention_mask = batch
    plain = model.generate(input_ids, attention_mask=attention_mask, num_beams=3, max_new_tokens=10)
    emitted = {token for row in plain for token in hypothesis(row) if token != EOS}
    banned = sorted(emitted)[:2]
    assert banned  # tokens the model would emit
    for num_beams in (1, 3):
        out = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=10,
                             bad_words_ids=[[token] for token in banned])
        assert not any(token in banned for row in out for token in hypothesis(row))


def test_forced_bos_token_id_is_first_generated_token(model, batch):
    input_ids, attention_mask = batch
    forced = 9
    for num_beams in (1, 3):
        out = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=6,
                             forced_bos_token_id=forced)
        assert (out[:, 0] == model.config.decoder_start_token_id).all()
        assert (out[:, 1] == forced).all()


# ------------------------------------------------------------------------------------- streamer and refusals


def test_text_streamer_with_greedy_prints_the_decoded_output(capsys):
    tokenizer = build_tokenizer()
    model = make_model(vocab_size=len(tokenizer))
    inputs = tokenizer(["the big cat sat on the mat"], return_tensors="pt")
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    capsys.readouterr()
    out = model.generate(**inputs, num_beams=1, max_new_tokens=12, streamer=streamer)
    printed = capsys.readouterr().out
    decoded = tokenizer.decode(out[0], skip_special_tokens=True)
    assert len(decoded.split()) >= 3
    assert printed == decoded + "\n"
    # transformers refuses streaming beam search, which is this model's default decoding (num_beams=5)
    with pytest.raises(ValueError, match="`streamer` cannot be used with beam search"):
        model.generate(**inputs, max_new_tokens=4, streamer=TextStreamer(tokenizer))


@pytest.mark.parametrize("assist", ["prompt_lookup", "assistant_model"])
def test_assisted_decoding_is_refused_for_the_stateful_model(model, assist):
    kwargs = {"prompt_lookup_num_tokens": 3} if assist == "prompt_lookup" else {"assistant_model": model}
    with pytest.raises(ValueError, match="assisted generation is not supported with stateful models"):
        model.generate(torch.tensor([SOURCES[0]]), num_beams=1, max_new_tokens=4, **kwargs)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def decoder_must_not_run(model, monkeypatch):
    """Makes any decoder call fail, to show that a `ValueError` is raised before decoding starts."""

    def fail(*args, **kwargs):
        raise AssertionError("the decoder ran before the input was rejected")

    monkeypatch.setattr(model.model.decoder, "forward", fail)
    return model


@pytest.mark.parametrize(
    "input_ids, message",
    [
        (torch.zeros(0, 4, dtype=torch.long), r"`input_ids` is empty \(shape \(0, 4\)\)"),
        (torch.zeros(2, 0, dtype=torch.long), r"`input_ids` is empty \(shape \(2, 0\)\)"),
        (torch.tensor([[5, VOCAB_SIZE, 2]]), r"outside \[0, 24\).*max 24"),
        (torch.tensor([[5, -1, 2]]), r"outside \[0, 24\).*min -1"),
    ],
)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_bad_input_raises_before_decoding(decoder_must_not_run, input_ids, message, num_beams):
    with pytest.raises(ValueError, match=message):
        decoder_must_not_run.generate(input_ids, num_beams=num_beams, max_new_tokens=4)


def test_more_return_sequences_than_beams_raises_before_decoding(decoder_must_not_run):
    message = r"`num_return_sequences` \(3\) has to be smaller or equal to `num_beams` \(2\)"
    with pytest.raises(ValueError, match=message):
        decoder_must_not_run.generate(torch.tensor([SOURCES[0]]), num_beams=2, num_return_sequences=3)


# ------------------------------------------------------------------------ defaults, BL-03, save and reload


def test_generation_config_defaults_ship_and_reload(model, batch, tmp_path):
    defaults = {"num_beams": 5, "max_length": 128, "early_stopping": True, "length_penalty": 1.0}
    for name, value in defaults.items():
        assert getattr(model.generation_config, name) == value
    model.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)  # reads generation_config.json
    assert (tmp_path / "generation_config.json").is_file()
    for name, value in defaults.items():
        assert getattr(saved, name) == value
    reloaded = GruAttnForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, value in defaults.items():
        assert getattr(reloaded.generation_config, name) == value

    # no kwargs means beam search with the shipped settings
    input_ids, attention_mask = batch
    default = reloaded.generate(input_ids, attention_mask=attention_mask)
    explicit = model.generate(input_ids, attention_mask=attention_mask, generation_config=GenerationConfig(
        num_beams=5, max_length=128, early_stopping=True, length_penalty=1.0, decoder_start_token_id=BOS,
        eos_token_id=EOS, pad_token_id=PAD,
    ))
    assert torch.equal(default, explicit)
    # per-call overrides win and leave the stored defaults alone
    greedy = reloaded.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=9)
    assert torch.equal(greedy, greedy_reference(model, input_ids, attention_mask, max_new_tokens=9))
    assert reloaded.generation_config.num_beams == 5 and reloaded.generation_config.max_length == 128


class _Records(logging_module.Handler):
    """Keeps the messages of the log records it receives."""

    def __init__(self):
        super().__init__(logging_module.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    """The messages of the warnings transformers logs during the test (its root logger does not propagate)."""
    handler = _Records()
    root = logging.get_logger("transformers")
    root.addHandler(handler)
    yield handler.messages
    root.removeHandler(handler)


def test_max_new_tokens_replaces_the_shipped_max_length_silently(batch, tmp_path, transformers_warnings):
    input_ids, attention_mask = batch
    make_model(eos_bias=-1e4).save_pretrained(tmp_path)  # never emits EOS: every row runs to the length limit
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["max_length"] == 128  # as models saved before this change hold it
    model = GruAttnForConditionalGeneration.from_pretrained(tmp_path).eval()
    reference = greedy_reference(model, input_ids, attention_mask, max_new_tokens=9)
    for kwargs in ({}, {"num_beams": 1}, {"num_beams": 3}):
        out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=9, **kwargs)
        assert out.shape == (len(SOURCES), 1 + 9)
        if kwargs.get("num_beams") == 1:
            assert torch.equal(out, reference)
    assert not [message for message in transformers_warnings if "max_length" in message]
    # an explicit max_length is obeyed, alone or (with transformers' notice) beside max_new_tokens, which wins
    assert torch.equal(model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_length=6),
                       reference[:, :6])
    both = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_length=6, max_new_tokens=9)
    assert torch.equal(both, reference)
    assert [message for message in transformers_warnings if "Both `max_new_tokens`" in message]
    # without either, the shipped max_length=128 (decoder start token included) applies, and it stays stored
    assert model.generate(input_ids[:1], attention_mask=attention_mask[:1], num_beams=1).shape == (1, 128)
    assert model.generation_config.max_length == 128


def test_saved_generation_settings_win_over_the_built_in_defaults(tmp_path):
    model = make_model()
    model.generation_config.num_beams = 3
    model.generation_config.max_length = 40
    model.save_pretrained(tmp_path)
    reloaded = GruAttnForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.generation_config.num_beams == 3 and reloaded.generation_config.max_length == 40


def test_bl03_generate_with_config_from_special_ids_only(tmp_path):
    tokenizer = build_tokenizer()
    special = {
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    assert None not in special.values() and tokenizer.unk_token_id == UNK
    torch.manual_seed(0)
    config = GruAttnConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, **special)
    model = GruAttnForConditionalGeneration(config).eval()
    assert config.decoder_start_token_id == tokenizer.bos_token_id
    assert model.generation_config.decoder_start_token_id == tokenizer.bos_token_id

    inputs = tokenizer(["the cat sat", "a big red dog ran up"], return_tensors="pt", padding=True)
    out = model.generate(inputs["input_ids"])
    assert (out[:, 0] == tokenizer.bos_token_id).all()

    model.save_pretrained(tmp_path)
    reloaded = GruAttnForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.config.decoder_start_token_id == tokenizer.bos_token_id
    assert reloaded.generation_config.decoder_start_token_id == tokenizer.bos_token_id
    again = reloaded.generate(inputs["input_ids"])
    assert (again[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(again, out)
