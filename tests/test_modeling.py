"""GruAttnForConditionalGeneration: numerics against a hand-written reference, padding invariance, attention,
incremental decoding, loss and gradient accumulation, save/load with tied weights, generation, bad input.

All models are tiny and run in eval mode (no dropout) unless a test trains them.
"""

import io
import itertools
import logging

import pytest
import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments
from transformers.utils import logging as hf_logging

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration, modeling_gru_attn


PAD, BOS, EOS = 0, 1, 2
VOCAB = 40
ATOL = 1e-5


def make_model(seed: int = 0, **overrides) -> GruAttnForConditionalGeneration:
    """A tiny eval-mode model; the weights are scaled up so that attention and outputs are far from uniform."""
    fields = {"vocab_size": VOCAB, "embedding_size": 8, "hidden_size": 12, "dropout": 0.0}
    fields.update(overrides)
    torch.manual_seed(seed)
    model = GruAttnForConditionalGeneration(GruAttnConfig(**fields))
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)
    return model.eval()


def random_ids(length: int, generator: torch.Generator, low: int = 3) -> torch.Tensor:
    """1-D tensor of `length` ids in [low, VOCAB) (no special ids)."""
    return torch.randint(low, VOCAB, (length,), generator=generator)


def pad_batch(rows: list[torch.Tensor], side: str = "right", value: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads 1-D id tensors into `(ids, mask)` of shape `(len(rows), max_len)` on `side`."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, span] = row
        mask[i, span] = 1
    return ids, mask


def alone_logits(model, source: torch.Tensor, decoder_inputs: torch.Tensor) -> torch.Tensor:
    """Logits `(target_len, vocab)` for one unpadded sentence."""
    with torch.no_grad():
        return model(input_ids=source[None], decoder_input_ids=decoder_inputs[None]).logits[0]


# --------------------------------------------------------------------------------------------------------------------
# Hand-written reference forward: nn.GRU calls step by step, attention from the docstring formulas, readout.


def reference_logits(model, source: torch.Tensor, decoder_inputs: torch.Tensor) -> torch.Tensor:
    """
    The model's maths for one unpadded sentence written out step by step, with the model's parameters:

    encoder `H = GRU_enc(E_src x)`; decoder start state per `decoder_init`; per step i with query `s = s_{i-1}`
    (top layer): additive `e_j = v^T tanh([W_q W_k] [s; h_j] + b)`, dot `e_j = s^T h_j`, general `e_j = s^T W h_j`;
    `a = softmax(e)`, `c = a H`, `s_i = GRU_dec([E_tgt y_{i-1}; c], s_{i-1})` (an `nn.GRU` module call), readout
    `r = [s_i; c; E_tgt y_{i-1}]`, logits `= W_out r + b_out`, or `W_out tanh(W_r r) + b_out` when tied.

    Returns `(target_len, decoder_vocab_size)`.
    """
    config = model.config
    encoder, decoder = model.model.encoder, model.model.decoder
    attention = decoder.attention
    directions = 2 if config.bidirectional_encoder else 1
    with torch.no_grad():
        encoder_states, final = encoder.rnn(encoder.embed_tokens(source[None]))  # (1, S, D*He), (L*D, 1, He)
        encoder_states = encoder_states[0]  # (S, D*He)
        per_layer = [torch.cat([final[layer * directions + d, 0] for d in range(directions)])
                     for layer in range(config.encoder_layers)]  # each (D*He,)
        if config.decoder_init == "zero":
            state = torch.zeros(config.decoder_layers, 1, config.hidden_size)
        elif config.decoder_init == "last":
            state = torch.stack(per_layer)[:, None]  # (L, 1, H)
        else:
            bridged = torch.tanh(decoder.bridge.weight @ per_layer[-1] + decoder.bridge.bias)
            state = bridged.view(config.decoder_layers, 1, config.hidden_size)
        rows = []
        for token in decoder_inputs:
            embedded = decoder.embed_tokens.weight[token]  # (E,)
            query = state[-1, 0]  # (H,)
            if config.attention_type == "additive":
                weight = torch.cat([attention.query_proj.weight, attention.key_proj.weight], dim=1)
                concat = torch.cat([query.expand(len(source), -1), encoder_states], dim=1)  # (S, H + D*He)
                energy = torch.tanh(concat @ weight.T + attention.key_proj.bias)
                scores = energy @ attention.energy_proj.weight[0]
            elif config.attention_type == "dot":
                scores = encoder_states @ query
            else:
                scores = (encoder_states @ attention.key_proj.weight.T) @ query
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            context = weights @ encoder_states  # (D*He,)
            output, state = decoder.rnn(torch.cat([embedded, context])[None, None], state)
            readout = torch.cat([output[0, 0], context, embedded])
            if config.tie_word_embeddings:
                readout = torch.tanh(model.readout.weight @ readout)
            rows.append(model.lm_head.weight @ readout + model.lm_head.bias)
    return torch.stack(rows)


REFERENCE_CASES = [
    {"attention_type": attention, "bidirectional_encoder": bidirectional, "encoder_layers": layers,
     "decoder_layers": layers, "tie_word_embeddings": tied}
    for attention, bidirectional, layers, tied in itertools.product(
        ["additive", "dot", "general"], [True, False], [1, 2], [True, False]
    )
] + [
    {"decoder_init": "last", "bidirectional_encoder": True, "encoder_layers": 2, "decoder_layers": 2},
    {"decoder_init": "zero", "attention_type": "general"},
    {"encoder_layers": 2, "decoder_layers": 3, "encoder_hidden_size": 5, "attention_type": "general"},
    {"share_embeddings": True, "attention_size": 7},
    {"decoder_vocab_size": 30, "embedding_size": 5, "attention_type": "dot"},
]


@pytest.mark.parametrize("overrides", REFERENCE_CASES, ids=lambda case: "-".join(f"{k}={v}" for k, v in case.items()))
def test_fast_path_equals_reference(overrides):
    model = make_model(seed=1, **overrides)
    generator = torch.Generator().manual_seed(2)
    sources = [random_ids(6, generator), random_ids(3, generator)]
    targets = [torch.cat([torch.tensor([BOS]), torch.randint(3, model.config.decoder_vocab_size, (4,),
                                                             generator=generator)]) for _ in sources]
    input_ids, attention_mask = pad_batch(sources)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=torch.stack(targets)).logits
    for i, (source, target) in enumerate(zip(sources, targets)):
        expected = reference_logits(model, source, target)
        assert (logits[i] - expected).abs().max() <= ATOL


@pytest.mark.parametrize(("tie", "bias"), [(False, True), (True, True), (False, False)])
def test_decoding_layout_of_the_output_layer_gives_the_training_logits(tie, bias):
    # Without autograd (decoding) the output layer is computed in a transposed layout; with autograd it is lm_head.
    model = make_model(seed=3, tie_word_embeddings=tie)
    if not bias:  # a user's own output layer, set with set_output_embeddings
        model.set_output_embeddings(nn.Linear(model.lm_head.in_features, VOCAB, bias=False))
    generator = torch.Generator().manual_seed(4)
    input_ids, attention_mask = pad_batch([random_ids(5, generator), random_ids(2, generator)])
    decoder_input_ids = torch.stack([random_ids(3, generator), random_ids(3, generator)])
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids}
    with torch.no_grad():
        decoding = model(**inputs).logits
    training = model(**inputs).logits
    assert training.requires_grad and decoding.shape == training.shape == (2, 3, VOCAB)
    torch.testing.assert_close(decoding, training.detach(), rtol=0, atol=ATOL)


def test_decoding_step_under_bf16_autocast_takes_the_autocast_product():
    # The Trainer evaluates a float32 model under bf16 autocast (--bf16): the features of a decoding step are then
    # bf16 and the packed float32 weight cannot take them.
    model = make_model(seed=5)
    generator = torch.Generator().manual_seed(6)
    input_ids, attention_mask = pad_batch([random_ids(length, generator) for length in (5, 2, 4)])
    decoder_input_ids = torch.stack([random_ids(1, generator) for _ in range(3)])
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            decoding = model(**inputs).logits
        training = model(**inputs).logits.detach()  # with autograd: lm_head itself
    assert decoding.dtype == training.dtype == torch.bfloat16
    torch.testing.assert_close(decoding, training, rtol=0.02, atol=0.05)


@pytest.mark.skipif(not modeling_gru_attn._HAS_MKL_PACKED_GEMM, reason="this torch build has no MKL packed GEMM")
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # torch.jit.trace
def test_packed_output_layer_of_a_decoding_step_follows_the_current_weights(tie):
    # A decoding step (one target position, no autograd, float32) multiplies by an MKL-packed copy of lm_head.weight;
    # the copy must never outlive the weights it was packed from.
    model = make_model(seed=5, tie_word_embeddings=tie)
    generator = torch.Generator().manual_seed(6)
    input_ids, attention_mask = pad_batch([random_ids(length, generator) for length in (5, 2, 4)])
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
              "decoder_input_ids": torch.stack([random_ids(1, generator) for _ in range(3)])}

    def check(rows):
        with torch.no_grad():
            decoding = model(**{name: value[:rows] for name, value in inputs.items()}).logits
        training = model(**{name: value[:rows] for name, value in inputs.items()}).logits.detach()
        torch.testing.assert_close(decoding, training, rtol=0, atol=ATOL)

    check(3)
    assert [key[0] for key in model._packed_output_weights] == [3]
    with torch.no_grad():
        model.lm_head.weight.mul_(-0.5)  # in place: the version counter moves
    check(3)
    model.load_state_dict(make_model(seed=7, tie_word_embeddings=tie).state_dict())
    check(3)
    for rows in (2, 1, 3):  # the two latest row counts are kept
        check(rows)
    assert [key[0] for key in model._packed_output_weights] == [1, 3]
    # traced and exported graphs take the plain layout (a packed copy is no graph input)
    features = torch.randn(2, 1, model.lm_head.in_features, generator=generator)
    with torch.no_grad():
        traced = torch.jit.trace(OutputLayer(model), (features,))
        exported = torch.export.export(OutputLayer(model), (features,))
    for graph in (traced.graph, exported.graph):  # the plain product (lm_head's own layout when traced)
        assert "mkl" not in str(graph) and ("addmm" in str(graph) or "lm_head" in str(graph))
    torch.testing.assert_close(traced(features), model.lm_head(features).detach(), rtol=0, atol=ATOL)


class OutputLayer(nn.Module):
    """`model._vocabulary_logits` as a module, for `torch.export`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model._vocabulary_logits(features)


# --------------------------------------------------------------------------------------------------------------------
# Padding invariance, packing, attention


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_invariance(side):
    model = make_model(attention_type="additive", encoder_layers=2, decoder_layers=2)
    generator = torch.Generator().manual_seed(3)
    lengths = [5, 1, 40, 9, 1, 3]  # the sentence of interest (5) between neighbours shorter and longer
    sources = [random_ids(n, generator) for n in lengths]
    targets = [torch.cat([torch.tensor([BOS]), random_ids(n, generator)]) for n in (4, 7, 2, 5, 1, 6)]
    input_ids, attention_mask = pad_batch(sources, side)
    decoder_input_ids, _ = pad_batch(targets, "right")
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    for i, (source, target) in enumerate(zip(sources, targets)):
        expected = alone_logits(model, source, target)
        assert (logits[i, : len(target)] - expected).abs().max() <= ATOL, f"row {i} (source length {len(source)})"


def test_left_and_right_padding_give_the_same_logits():
    model = make_model(attention_type="general", bidirectional_encoder=True)
    generator = torch.Generator().manual_seed(4)
    sources = [random_ids(1, generator), random_ids(40, generator), random_ids(12, generator)]
    decoder_input_ids = torch.cat([torch.full((3, 1), BOS), torch.randint(3, VOCAB, (3, 6), generator=generator)], 1)
    results = []
    for side in ("right", "left"):
        input_ids, attention_mask = pad_batch(sources, side)
        with torch.no_grad():
            results.append(model(input_ids=input_ids, attention_mask=attention_mask,
                                 decoder_input_ids=decoder_input_ids).logits)
    assert (results[0] - results[1]).abs().max() <= ATOL


def test_unsorted_lengths_bl18():
    """BL-18: lengths [2, 5, 9] (increasing), the same in decreasing order, and one at a time agree."""
    model = make_model(encoder_layers=2, decoder_layers=2, bidirectional_encoder=True)
    encoder = model.get_encoder()
    generator = torch.Generator().manual_seed(5)
    sources = [random_ids(n, generator) for n in (2, 5, 9)]
    alone = []
    with torch.no_grad():
        for source in sources:
            out = encoder(source[None])
            alone.append((out.last_hidden_state[0], out.final_hidden_state[0]))
        for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
            input_ids, attention_mask = pad_batch([sources[k] for k in order])
            out = encoder(input_ids, attention_mask)
            for row, k in enumerate(order):
                n = len(sources[k])
                assert (out.last_hidden_state[row, :n] - alone[k][0]).abs().max() <= ATOL
                assert (out.final_hidden_state[row] - alone[k][1]).abs().max() <= ATOL
                assert torch.all(out.last_hidden_state[row, n:] == 0)  # padding positions are zero

        input_ids, attention_mask = pad_batch(sources)
        batched = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, do_sample=False,
                                 num_beams=1)
        for row, source in enumerate(sources):
            single = model.generate(source[None], max_new_tokens=6, do_sample=False, num_beams=1)[0]
            assert torch.equal(batched[row, : len(single)], single)


@pytest.mark.parametrize("attention_type", ["additive", "dot", "general"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_attention_weights_zero_on_padding_and_rows_sum_to_one(attention_type, side):
    model = make_model(attention_type=attention_type)
    generator = torch.Generator().manual_seed(6)
    input_ids, attention_mask = pad_batch([random_ids(n, generator) for n in (3, 8, 1)], side)
    decoder_input_ids = torch.cat([torch.full((3, 1), BOS), torch.randint(3, VOCAB, (3, 4), generator=generator)], 1)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                    output_attentions=True)
    (weights,) = out.cross_attentions
    assert weights.shape == (3, 1, 5, 8)
    padding = (attention_mask == 0)[:, None, None, :].expand_as(weights)
    assert torch.all(weights[padding] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 1, 5), atol=1e-6)
    only_token = 0 if side == "right" else 7  # row 2 has a single real token: all weight on it
    assert torch.allclose(weights[2, 0, :, only_token], torch.ones(5))


def test_long_source_bl20():
    """BL-20: a 300-token source works, attention has 300 columns and depends on the encoder states."""
    model = make_model()
    generator = torch.Generator().manual_seed(7)
    source = random_ids(300, generator)[None]
    decoder_input_ids = torch.tensor([[BOS, 5, 6]])
    with torch.no_grad():
        out = model(input_ids=source, decoder_input_ids=decoder_input_ids, output_attentions=True)
        assert out.cross_attentions[0].shape == (1, 1, 3, 300)
        generated = model.generate(source, max_new_tokens=5, do_sample=False, num_beams=1)
        assert generated.shape[1] <= 6 and generated[0, 0] == BOS

        encoder_outputs = model.get_encoder()(source)
        changed = model.get_encoder()(source)
        changed.last_hidden_state[0, 120] += 1.0
        weights = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
                        output_attentions=True).cross_attentions[0]
        weights_changed = model(encoder_outputs=changed, decoder_input_ids=decoder_input_ids,
                                output_attentions=True).cross_attentions[0]
    assert (weights[..., 120] - weights_changed[..., 120]).abs().max() > 1e-4


def test_max_source_positions_truncates_with_warning(caplog):
    """BL-20: with `max_source_positions`, longer sources are cut to it (with a warning) instead of failing; the
    cut-off tokens get no attention and the result equals running on the kept tokens."""
    model = make_model(max_source_positions=10)
    generator = torch.Generator().manual_seed(8)
    source = random_ids(30, generator)
    decoder_input_ids = torch.tensor([[BOS, 5, 6, 7]])
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = model(input_ids=source[None], decoder_input_ids=decoder_input_ids, output_attentions=True)
    assert "max_source_positions" in caplog.text
    with torch.no_grad():
        kept = model(input_ids=source[None, :10], decoder_input_ids=decoder_input_ids)
    assert torch.all(out.cross_attentions[0][..., 10:] == 0)
    assert (out.logits - kept.logits).abs().max() <= ATOL


# --------------------------------------------------------------------------------------------------------------------
# Incremental decoding


@pytest.mark.parametrize("overrides", [{}, {"attention_type": "dot", "decoder_layers": 2, "encoder_layers": 2},
                                       {"attention_type": "general", "tie_word_embeddings": False}])
def test_incremental_decoding_equals_teacher_forcing(overrides):
    model = make_model(**overrides)
    generator = torch.Generator().manual_seed(9)
    input_ids, attention_mask = pad_batch([random_ids(n, generator) for n in (4, 9)], "left")
    decoder_input_ids = torch.cat([torch.full((2, 1), BOS), torch.randint(3, VOCAB, (2, 7), generator=generator)], 1)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        encoder_outputs = model.get_encoder()(input_ids, attention_mask)
        cache, steps = None, []
        for t in range(decoder_input_ids.shape[1]):
            out = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                        decoder_input_ids=decoder_input_ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits[:, 0])
        assert cache.get_seq_length() == decoder_input_ids.shape[1]
        # the older keyword `past_key_values` continues the same state
        legacy = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                       decoder_input_ids=decoder_input_ids[:, :1], use_cache=True)
        legacy = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                       decoder_input_ids=decoder_input_ids[:, 1:3], past_key_values=legacy.cache, use_cache=True)
    assert (torch.stack(steps, 1) - full.logits).abs().max() <= ATOL
    assert (legacy.logits - full.logits[:, 1:3]).abs().max() <= ATOL


def test_generate_equals_hand_written_greedy_loop():
    model = make_model()
    generator = torch.Generator().manual_seed(10)
    input_ids, attention_mask = pad_batch([random_ids(n, generator) for n in (5, 2, 8)])
    with torch.no_grad():
        generated = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False,
                                   num_beams=1, eos_token_id=None)
        tokens = torch.full((3, 1), BOS)
        for _ in range(8):  # full recomputation each step, no cache
            logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=tokens).logits
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(generated, tokens)


# --------------------------------------------------------------------------------------------------------------------
# Loss


def manual_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """-log p(label) for every non-ignored position, from logsumexp by hand."""
    losses = []
    for i in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            label = int(labels[i, t])
            if label != -100:
                row = logits[i, t].double()
                losses.append(float(row.exp().sum().log() - row[label]))
    return losses


def test_loss_ignores_minus_100_and_honours_num_items_in_batch():
    model = make_model()
    input_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    attention_mask = (input_ids != PAD).long()
    labels = torch.tensor([[11, 12, 13, EOS], [14, EOS, -100, -100]])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        summed = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=7)
        as_tensor = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                          num_items_in_batch=torch.tensor(7))
    token_losses = manual_token_losses(out.logits, labels)
    assert len(token_losses) == 6
    assert abs(out.loss.item() - sum(token_losses) / 6) < 1e-5
    assert abs(summed.loss.item() - sum(token_losses) / 7) < 1e-5
    assert abs(as_tensor.loss.item() - sum(token_losses) / 7) < 1e-5


def test_labels_shift_bl13():
    """BL-13: decoder inputs built from labels are [start, labels[:-1]] with -100 -> pad; loss equal either way."""
    model = make_model(decoder_start_token_id=4)
    labels = torch.tensor([[5, 6, 7, EOS, -100, -100]])
    shifted = model.prepare_decoder_input_ids_from_labels(labels)
    assert shifted.tolist() == [[4, 5, 6, 7, EOS, PAD]]
    input_ids = torch.tensor([[8, 9, 10]])
    with torch.no_grad():
        loss_a = model(input_ids=input_ids, labels=labels).loss
        loss_b = model(input_ids=input_ids, decoder_input_ids=torch.tensor([[4, 5, 6, 7, EOS, PAD]]),
                       labels=labels).loss
    assert torch.isfinite(loss_a)
    assert loss_a.item() == loss_b.item()


# --------------------------------------------------------------------------------------------------------------------
# Trainer: num_items_in_batch (BL-09) and exact gradient accumulation


class Seq2SeqCollator:
    """Pads `input_ids` with pad, builds `attention_mask`, pads `labels` with -100."""

    def __call__(self, features: list[dict]) -> dict:
        input_ids, attention_mask = pad_batch([torch.tensor(f["input_ids"]) for f in features])
        labels, _ = pad_batch([torch.tensor(f["labels"]) for f in features], value=-100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def toy_pairs(count: int) -> list[dict]:
    """`count` copy-task pairs of varied lengths (so micro-batches hold different numbers of label tokens)."""
    generator = torch.Generator().manual_seed(11)
    pairs = []
    for i in range(count):
        source = random_ids(1 + (3 * i) % 7, generator).tolist()
        pairs.append({"input_ids": source, "labels": source + [EOS]})
    return pairs


def train(model, tmp_path, pairs, **arguments):
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, seed=0, **arguments,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=pairs, data_collator=Seq2SeqCollator())
    return trainer.train()


def test_trainer_with_gradient_accumulation_bl09(tmp_path):
    model = make_model()
    model.train()
    result = train(model, tmp_path, toy_pairs(8), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                   max_steps=2, learning_rate=1e-3)
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    pairs = toy_pairs(8)
    updated = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        model = make_model(seed=12)
        model.train()
        train(model, tmp_path / f"bs{batch_size}", pairs, per_device_train_batch_size=batch_size,
              gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5, optim="sgd",
              lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0)
        updated.append({name: param.detach().clone() for name, param in model.named_parameters()})
    initial = dict(make_model(seed=12).named_parameters())
    moved = max((updated[0][name] - initial[name]).abs().max().item() for name in initial)
    assert moved > 1e-3  # the step did change the weights
    difference = max((updated[0][name] - updated[1][name]).abs().max().item() for name in initial)
    assert difference < 1e-6


# --------------------------------------------------------------------------------------------------------------------
# Save / load with tied weights; generation defaults


def capture_transformers_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    return stream, handler


@pytest.mark.parametrize(("share", "tie"), [(True, True), (False, True), (False, False), (True, False)])
def test_save_load_round_trip_keeps_weights_and_ties(tmp_path, share, tie):
    model = make_model(share_embeddings=share, tie_word_embeddings=tie)
    source = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = model.generate(source, max_new_tokens=6, do_sample=False, num_beams=1)
    model.save_pretrained(tmp_path)

    stream, handler = capture_transformers_log()
    root = hf_logging.get_logger("transformers")
    root.addHandler(handler)
    try:
        loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    finally:
        root.removeHandler(handler)
    log = stream.getvalue()
    assert "MISSING" not in log and "newly initialized" not in log, log
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(loaded) is GruAttnForConditionalGeneration

    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name

    encoder_embedding = loaded.model.encoder.embed_tokens.weight
    decoder_embedding = loaded.model.decoder.embed_tokens.weight
    assert (encoder_embedding.data_ptr() == decoder_embedding.data_ptr()) == share
    assert (loaded.lm_head.weight.data_ptr() == decoder_embedding.data_ptr()) == tie
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.generate(source, max_new_tokens=6, do_sample=False, num_beams=1), expected)


def test_generate_without_kwargs_bl03(tmp_path):
    """BL-03: a config with only pad/bos/eos still generates; every row starts with decoder_start (= bos)."""
    torch.manual_seed(13)
    model = GruAttnForConditionalGeneration(
        GruAttnConfig(vocab_size=VOCAB, embedding_size=8, hidden_size=12, pad_token_id=0, bos_token_id=3,
                      eos_token_id=4)
    ).eval()
    with torch.no_grad():  # make EOS likely so that the default search (whatever its settings) ends quickly
        model.lm_head.bias[4] += 20.0
    assert model.config.decoder_start_token_id == 3
    source = torch.tensor([[5, 6, 7], [8, 9, 10]])
    output = model.generate(source)
    assert torch.all(output[:, 0] == 3)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_start_token_id == 3 and loaded.generation_config.decoder_start_token_id == 3
    reloaded_output = loaded.generate(source)
    assert torch.all(reloaded_output[:, 0] == 3)
    assert torch.equal(reloaded_output, output)


def test_left_and_right_padding_give_the_same_greedy_output_bl30():
    model = make_model()
    sources = [torch.tensor([5]), torch.tensor([5, 6, 7, 8, 9, 10])]
    outputs = []
    for side in ("right", "left"):
        input_ids, attention_mask = pad_batch(sources, side)
        with torch.no_grad():
            outputs.append(model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8,
                                          do_sample=False, num_beams=1))
    assert torch.equal(outputs[0], outputs[1])


# --------------------------------------------------------------------------------------------------------------------
# Numerical robustness (BL-24)


@pytest.mark.parametrize("attention_type", ["additive", "dot", "general"])
def test_huge_encoder_outputs_stay_finite_bl24(attention_type):
    model = make_model(attention_type=attention_type)
    input_ids, attention_mask = pad_batch([torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10])])
    decoder_input_ids = torch.tensor([[BOS, 5, 6], [BOS, 7, 8]])
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(input_ids, attention_mask)
        encoder_outputs.last_hidden_state.mul_(1e4)
        out = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                    decoder_input_ids=decoder_input_ids, output_attentions=True)
    weights = out.cross_attentions[0]
    assert torch.isfinite(out.logits).all() and torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(-1), torch.ones(2, 1, 3), atol=1e-5)
    assert torch.all(weights[1, 0, :, 2:] == 0)


def test_bf16_autocast_long_source_bl24():
    model = make_model()
    generator = torch.Generator().manual_seed(14)
    input_ids, attention_mask = pad_batch([random_ids(200, generator), random_ids(120, generator)])
    decoder_input_ids = torch.tensor([[BOS, 5, 6, 7], [BOS, 8, 9, 10]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                    output_attentions=True)
    weights = out.cross_attentions[0].float()
    assert weights.shape[-1] == 200
    assert torch.isfinite(out.logits.float()).all() and torch.isfinite(weights).all()
    assert (weights.sum(-1) - 1).abs().max() <= 1e-3
    assert torch.all(weights[1, 0, :, 120:] == 0)


def test_training_with_high_learning_rate_stays_finite_bl24():
    torch.manual_seed(15)
    model = GruAttnForConditionalGeneration(
        GruAttnConfig(vocab_size=VOCAB, embedding_size=8, hidden_size=16, dropout=0.1)
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    pairs = toy_pairs(16)
    collator = Seq2SeqCollator()
    losses = []
    for step in range(50):
        batch = collator([pairs[(step * 8 + k) % 16] for k in range(8)])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns the copy task at all


# --------------------------------------------------------------------------------------------------------------------
# Bad input: a ValueError that says what is wrong


def bad_call(model, case):
    good_source = torch.tensor([[5, 6, 7], [8, 9, 0]])
    good_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    good_target = torch.tensor([[BOS, 5], [BOS, 6]])
    arguments = {"input_ids": good_source, "attention_mask": good_mask, "decoder_input_ids": good_target}
    arguments.update(case)
    return model(**{key: value for key, value in arguments.items() if value is not None})


BAD_INPUTS = {
    "float input_ids": ({"input_ids": torch.tensor([[5.0, 6.0, 7.0], [8.0, 9.0, 0.0]])}, "integer tensor"),
    "1-D input_ids": ({"input_ids": torch.tensor([5, 6, 7]), "attention_mask": None}, "(batch_size, sequence_length)"),
    "3-D input_ids": ({"input_ids": torch.ones(2, 3, 1, dtype=torch.long), "attention_mask": None}, "input_ids"),
    "bool input_ids": ({"input_ids": torch.ones(2, 3, dtype=torch.bool)}, "integer tensor"),
    "empty input_ids": ({"input_ids": torch.zeros(2, 0, dtype=torch.long), "attention_mask": None}, "empty"),
    "float decoder_input_ids": ({"decoder_input_ids": torch.tensor([[1.0, 5.0], [1.0, 6.0]])}, "decoder_input_ids"),
    "no decoder inputs or labels": ({"decoder_input_ids": None}, "`decoder_input_ids` or `labels`"),
    "source id >= vocab": ({"input_ids": torch.tensor([[5, 6, VOCAB], [8, 9, 0]])}, f"outside [0, {VOCAB})"),
    "negative source id": ({"input_ids": torch.tensor([[5, -1, 7], [8, 9, 0]])}, "input_ids"),
    "target id >= vocab": ({"decoder_input_ids": torch.tensor([[BOS, VOCAB + 3], [BOS, 6]])}, "decoder_input_ids"),
    "label >= vocab": ({"labels": torch.tensor([[5, VOCAB], [6, -100]])}, "labels"),
    "label -5": ({"labels": torch.tensor([[5, -5], [6, -100]])}, "labels"),
    "labels of another length": ({"labels": torch.tensor([[5, 6, 7], [6, 2, -100]])}, "must match"),
    "all-padding row": ({"attention_mask": torch.tensor([[1, 1, 1], [0, 0, 0]])}, "no real token"),
    "mask of another shape": ({"attention_mask": torch.tensor([[1, 1], [1, 1]])}, "attention_mask"),
    "batch sizes differ": ({"decoder_input_ids": torch.tensor([[BOS, 5]])}, "batch size"),
    "left-padded decoder mask": ({"decoder_attention_mask": torch.tensor([[0, 1], [1, 1]])}, "right-padded"),
    "no source": ({"input_ids": None, "attention_mask": None}, "input_ids"),
    "1-D decoder mask": ({"decoder_attention_mask": torch.tensor([1, 1])}, "decoder_attention_mask"),
    "decoder mask of another shape": ({"decoder_attention_mask": torch.ones(2, 5)}, "decoder_attention_mask"),
    "labels all -100": ({"decoder_input_ids": None, "labels": torch.full((2, 3), -100)}, "no token"),
    "num_items_in_batch 0": ({"labels": torch.tensor([[5, 6], [7, -100]]), "num_items_in_batch": 0}, "positive"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_value_error(name):
    case, fragment = BAD_INPUTS[name]
    model = make_model()
    with pytest.raises(ValueError) as error:
        bad_call(model, case)
    assert fragment in str(error.value), str(error.value)


def test_mask_of_another_shape_with_precomputed_encoder_outputs():
    model = make_model()
    input_ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    encoder_outputs = model.get_encoder()(input_ids, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(encoder_outputs=encoder_outputs, attention_mask=torch.ones(2, 5, dtype=torch.long),
              decoder_input_ids=torch.tensor([[BOS], [BOS]]))


def test_encoder_outputs_without_final_state_and_mismatched_cache():
    model = make_model()
    input_ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    decoder_input_ids = torch.tensor([[BOS], [BOS]])
    encoder_outputs = model.get_encoder()(input_ids)
    with torch.no_grad():
        as_tuple = model(encoder_outputs=(encoder_outputs.last_hidden_state, encoder_outputs.final_hidden_state),
                         decoder_input_ids=decoder_input_ids).logits
        as_output = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids).logits
    assert torch.equal(as_tuple, as_output)
    with pytest.raises(ValueError, match="final_hidden_state"):
        model(encoder_outputs=(encoder_outputs.last_hidden_state,), decoder_input_ids=decoder_input_ids)
    one_row_cache = model(input_ids=input_ids[:1], decoder_input_ids=decoder_input_ids[:1], use_cache=True).cache
    with pytest.raises(ValueError, match="`cache` holds 1 rows"):
        model(input_ids=input_ids, decoder_input_ids=decoder_input_ids, cache=one_row_cache)


def test_ignored_label_positions_do_not_reach_the_embedding():
    """Labels with -100 (and without decoder inputs) never index the embedding: finite loss, no error."""
    model = make_model()
    labels = torch.tensor([[-100, -100, 5], [6, -100, -100]])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6], [7, 8]]), labels=labels)
    assert torch.isfinite(out.loss) and torch.isfinite(out.logits).all()
    expected = manual_token_losses(out.logits, labels)
    assert abs(out.loss.item() - sum(expected) / 2) < 1e-5
