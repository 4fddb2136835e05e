"""The vocabulary shortlist (issue 13): decoding restricted to a batch's candidate target tokens.

Expected values are worked out without the shortlist code path: teacher-forced full-vocabulary logits with the
non-candidates set to -inf by hand, a hand-counted co-occurrence table, and the full-vocabulary `generate()`.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_fake import fake_hub  # noqa: F401  (pytest fixture)
from safetensors import safe_open
from safetensors.torch import save_file
from test_generation import WORDS, build_tokenizer
from transformers import AutoModelForSeq2SeqLM

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration, GruAttnShortlist
from hf_gru_attn.modeling_gru_attn import SHORTLIST_NAME
from hf_gru_attn.shortlist import build_shortlist


REPO_ROOT = Path(__file__).resolve().parent.parent
PAD, BOS, EOS = 0, 1, 2
VOCAB_SIZE = 24
SOURCES = [[5, 6, 2, 0, 0], [8, 9, 10, 11, 2]]
MASK = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def make_model(seed: int = 0, **overrides) -> GruAttnForConditionalGeneration:
    """A tiny seeded model in eval mode, `initializer_range=1.0` for clear argmax margins, EOS pushed down so that
    hypotheses run long."""
    torch.manual_seed(seed)
    config = GruAttnConfig(**{"vocab_size": VOCAB_SIZE, "embedding_size": 8, "hidden_size": 16, "decoder_layers": 2,
                              "initializer_range": 1.0, **overrides})
    model = GruAttnForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.bias[EOS] -= 3.0
    return model


def whole_vocabulary() -> GruAttnShortlist:
    """Every source id lists every target id."""
    return GruAttnShortlist(torch.arange(VOCAB_SIZE).repeat(VOCAB_SIZE, 1), torch.tensor([], dtype=torch.long),
                            VOCAB_SIZE)


def shortlist_without(excluded: set[int]) -> GruAttnShortlist:
    """Every source id lists every target id but `excluded` (never special tokens)."""
    kept = torch.tensor([token for token in range(VOCAB_SIZE) if token not in excluded])
    return GruAttnShortlist(kept.repeat(VOCAB_SIZE, 1), torch.tensor([], dtype=torch.long), VOCAB_SIZE)


def batch():
    return torch.tensor(SOURCES), torch.tensor(MASK)


def teacher_forced_logits(model, decoder_input_ids, **kwargs) -> torch.Tensor:
    input_ids, attention_mask = batch()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                     use_cache=False, **kwargs).logits


# ------------------------------------------------------------------------------------------ decoding equivalences


@pytest.mark.parametrize("kwargs", [
    {"num_beams": 1}, {"num_beams": 4, "num_return_sequences": 4}, {"num_beams": 3, "use_cache": False},
])
def test_whole_vocabulary_shortlist_gives_identical_tokens_and_scores(kwargs):
    model = make_model()
    model.set_shortlist(whole_vocabulary())
    input_ids, attention_mask = batch()
    common = {"attention_mask": attention_mask, "max_new_tokens": 9, "output_scores": True,
              "return_dict_in_generate": True, **kwargs}
    full = model.generate(input_ids, use_shortlist=False, **common)
    short = model.generate(input_ids, use_shortlist=True, **common)
    assert torch.equal(full.sequences, short.sequences)
    for full_scores, short_scores in zip(full.scores, short.scores, strict=True):
        torch.testing.assert_close(short_scores, full_scores, rtol=0, atol=1e-5)


def test_whole_vocabulary_shortlist_gives_identical_samples():
    model = make_model()
    model.set_shortlist(whole_vocabulary())
    input_ids, attention_mask = batch()
    outputs = []
    for use_shortlist in (False, True):
        torch.manual_seed(7)
        outputs.append(model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1,
                                      top_k=0, max_new_tokens=9, use_shortlist=use_shortlist))
    assert torch.equal(outputs[0], outputs[1])


def test_config_flag_switches_the_shortlist_on():
    model = make_model()
    input_ids, attention_mask = batch()
    greedy = {"attention_mask": attention_mask, "num_beams": 1, "max_new_tokens": 9}
    full = model.generate(input_ids, **greedy)
    missing = int(full[0, 2])
    model.set_shortlist(shortlist_without({missing}))
    on_by_call = model.generate(input_ids, use_shortlist=True, **greedy)
    assert (on_by_call != missing).all()
    model.config.use_shortlist = True
    assert torch.equal(model.generate(input_ids, **greedy), on_by_call)
    assert torch.equal(model.generate(input_ids, use_shortlist=False, **greedy), full)


def test_missing_reference_token_only_changes_that_position():
    """Teacher-forced on a hypothesis, a shortlist without one of its tokens keeps every other logit as it was: the
    prediction changes only where the full model predicted the missing token, to the full model's runner-up."""
    model = make_model()
    input_ids, attention_mask = batch()
    reference = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=9)
    full = teacher_forced_logits(model, reference)
    predicted = full.argmax(-1)
    missing = int(predicted[0, 3])
    assert missing not in (PAD, BOS, EOS)
    model.set_shortlist(shortlist_without({missing}))
    short = teacher_forced_logits(model, reference, use_shortlist=True)

    assert torch.isneginf(short[..., missing]).all()
    expected = full.clone()
    expected[..., missing] = float("-inf")
    torch.testing.assert_close(short, expected, rtol=0, atol=1e-5)
    changed = short.argmax(-1) != predicted
    assert torch.equal(changed, predicted == missing) and changed.sum() >= 1
    runner_up = full.topk(2, dim=-1).indices[..., 1]
    assert torch.equal(short.argmax(-1)[changed], runner_up[changed])


def test_greedy_with_a_missing_token_keeps_the_prefix_before_it():
    model = make_model()
    input_ids, attention_mask = batch()
    full = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=9)
    missing = int(full[0, 4])
    first = (full == missing).int().argmax(dim=1)  # first position of the token in each row (0: absent)
    first[~(full == missing).any(dim=1)] = full.shape[1]
    model.set_shortlist(shortlist_without({missing}))
    short = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=9,
                           use_shortlist=True)
    for row in range(full.shape[0]):
        assert torch.equal(short[row, : first[row]], full[row, : first[row]])
    assert (short != missing).all() and not torch.equal(short, full)


def test_scores_are_log_probs_over_the_shortlist():
    """Beam search: `sequences_scores` == the teacher-forced sum of log-softmax over the candidates / length."""
    model = make_model()
    candidates = torch.tensor([PAD, BOS, EOS, 4, 7, 9, 12, 13, 20])
    table = GruAttnShortlist(torch.full((VOCAB_SIZE, 1), -1), candidates, VOCAB_SIZE)
    model.set_shortlist(table)
    input_ids, attention_mask = batch()
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=3, num_return_sequences=3,
                         max_new_tokens=8, length_penalty=1.0, early_stopping=False, use_shortlist=True,
                         output_scores=True, return_dict_in_generate=True)
    outside = torch.ones(VOCAB_SIZE, dtype=torch.bool)
    outside[candidates] = False
    assert all(torch.isneginf(step[:, outside]).all() for step in out.scores)
    for row, (sequence, score) in enumerate(zip(out.sequences, out.sequences_scores, strict=True)):
        tokens = sequence[1:].tolist()
        tokens = tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens
        assert set(tokens) <= set(candidates.tolist())
        source = row // 3
        decoder_input_ids = torch.tensor([[BOS] + tokens[:-1]])
        with torch.no_grad():
            full = model(input_ids=input_ids[source : source + 1], attention_mask=attention_mask[source : source + 1],
                         decoder_input_ids=decoder_input_ids, use_shortlist=False).logits[0]
        restricted = full.masked_fill(outside, float("-inf")).log_softmax(-1)
        expected = restricted.gather(1, torch.tensor(tokens)[:, None]).sum().item() / len(tokens)
        assert score.item() == pytest.approx(expected, abs=1e-4)


def test_training_loss_ignores_the_shortlist():
    model = make_model()
    model.set_shortlist(shortlist_without({7, 8, 9}))
    input_ids, attention_mask = batch()
    labels = torch.tensor([[7, 8, 9, 2], [4, 7, 2, -100]])
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_shortlist=False)
        short = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_shortlist=True)
    assert torch.isfinite(short.loss) and short.loss.item() == full.loss.item()
    assert torch.equal(short.logits, full.logits)


def test_candidates_are_the_union_over_real_source_tokens():
    top = torch.full((VOCAB_SIZE, 2), -1)
    top[5], top[6], top[0], top[9] = torch.tensor([10, 11]), torch.tensor([11, -1]), torch.tensor([20, 21]), 22
    table = GruAttnShortlist(top, torch.tensor([3]), VOCAB_SIZE)
    input_ids, attention_mask = torch.tensor([[5, 6, 0], [9, 5, 0]]), torch.tensor([[1, 1, 0], [1, 1, 0]])
    # padding (id 0, masked) adds nothing; special ids are added
    assert table.candidate_ids(input_ids, attention_mask, (0, 2)).tolist() == [0, 2, 3, 10, 11, 22]
    assert table.candidate_ids(input_ids).tolist() == [3, 10, 11, 20, 21, 22]


# ---------------------------------------------------------------------------------------------- building the table


def test_build_shortlist_matches_hand_counts():
    # pairs (source ids | target ids); 0-3 are special, 9 the most frequent target
    sources = [[4, 5, 2], [4, 6, 2], [4, 5, 2], [7, 2]]
    targets = [[10, 9, 2], [11, 9, 2], [10, 12, 9, 2], [13, 9, 9, 2]]
    table = build_shortlist(sources, targets, 8, 16, top_k=2, num_frequent=1, special_ids=[0, 1, 2, 3])
    assert table.frequent_targets.tolist() == [0, 1, 2, 3, 9]
    # source 4: p(10|4) = 2/3, p(11|4) = p(12|4) = 1/3, tie broken by target count (both 1) then id
    assert table.top_targets[4].tolist() == [10, 11]
    assert table.top_targets[5].tolist() == [10, 12]  # p(10|5) = 1, p(12|5) = 1/2
    assert table.top_targets[6].tolist() == [11, -1]
    assert table.top_targets[7].tolist() == [13, -1]
    assert (table.top_targets[[0, 1, 2, 3]] == -1).all()  # special source tokens have no candidates


def test_build_shortlist_script_writes_a_table_that_from_pretrained_loads(tmp_path):
    model = make_model(vocab_size=30)
    model.save_pretrained(tmp_path / "model")
    build_tokenizer().save_pretrained(tmp_path / "model")
    words = WORDS[4:]
    (tmp_path / "train.de").write_text("\n".join(" ".join(words[i : i + 3]) for i in range(10)) + "\n")
    (tmp_path / "train.en").write_text("\n".join(" ".join(words[i + 1 : i + 4]) for i in range(10)) + "\n")
    command = [sys.executable, str(REPO_ROOT / "scripts" / "build_shortlist.py"), "--model", str(tmp_path / "model"),
               "--train_file", str(tmp_path / "train"), "--validation_file", str(tmp_path / "train"),
               "--top_k", "5", "--num_frequent", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # the validation data is the training data, and top_k covers every target a source token was seen with
    assert "100.00% of the reference tokens" in result.stdout
    loaded = GruAttnForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert loaded.shortlist.top_targets.shape == (30, 5) and len(loaded.shortlist.frequent_targets) == 4 + 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--overwrite" in again.stderr


# ----------------------------------------------------------------------------------------- saving, loading, Hub


def test_save_pretrained_and_from_pretrained_keep_the_table(tmp_path):
    model = make_model()
    model.set_shortlist(shortlist_without({7}))
    model.save_pretrained(tmp_path)
    assert (tmp_path / SHORTLIST_NAME).is_file()
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        assert not [name for name in weights.keys() if "shortlist" in name]  # noqa: SIM118
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.shortlist.top_targets, model.shortlist.top_targets)
    assert torch.equal(loaded.shortlist.frequent_targets, model.shortlist.frequent_targets)
    model_without, info = GruAttnForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert model_without.shortlist is not None and not info["missing_keys"]


def test_push_to_hub_uploads_the_table_and_from_pretrained_reads_it_by_repo_id(fake_hub, tmp_path):  # noqa: F811
    model = make_model()
    model.set_shortlist(shortlist_without({7}))
    model.push_to_hub("test-user/shortlisted")
    assert SHORTLIST_NAME in fake_hub.files("test-user/shortlisted")
    loaded = GruAttnForConditionalGeneration.from_pretrained("test-user/shortlisted")
    assert torch.equal(loaded.shortlist.top_targets, model.shortlist.top_targets)

    spec = importlib.util.spec_from_file_location("push_script", REPO_ROOT / "scripts" / "push_to_hub.py")
    push = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(push)
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "staging").mkdir()
    staged = push.stage_model_folder(tmp_path / "model", tmp_path / "staging", "test-user/x", "de", "en")
    assert SHORTLIST_NAME in staged
    model.save_pretrained(tmp_path / "pushed", push_to_hub=True, repo_id="test-user/saved-and-pushed")
    assert SHORTLIST_NAME in fake_hub.files("test-user/saved-and-pushed")
    assert (tmp_path / "pushed" / SHORTLIST_NAME).is_file()
    without = make_model()
    without.push_to_hub("test-user/plain")
    assert GruAttnForConditionalGeneration.from_pretrained("test-user/plain").shortlist is None


# ----------------------------------------------------------------------------------------------------- bad input


def test_use_shortlist_without_a_table_is_a_clear_error():
    model = make_model()
    input_ids, attention_mask = batch()
    with pytest.raises(ValueError, match="no vocabulary shortlist.*build_shortlist.py"):
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, use_shortlist=True)


def test_use_shortlist_without_source_ids_is_a_clear_error():
    model = make_model()
    model.set_shortlist(whole_vocabulary())
    input_ids, attention_mask = batch()
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)  # without use_shortlist: no input_ids kept
    assert encoder_outputs.input_ids is None
    assert torch.equal(model.get_encoder()(input_ids, attention_mask, use_shortlist=True).input_ids, input_ids)
    with pytest.raises(ValueError, match="needs the source ids"):
        model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
              decoder_input_ids=torch.full((2, 1), BOS), use_shortlist=True)


def test_table_for_another_vocabulary_is_refused(tmp_path):
    model = make_model()
    other = GruAttnShortlist(torch.zeros((VOCAB_SIZE + 6, 2), dtype=torch.long), torch.tensor([1]), VOCAB_SIZE + 6)
    with pytest.raises(ValueError, match="another model"):
        model.set_shortlist(other)
    model.save_pretrained(tmp_path)
    other.save(tmp_path / SHORTLIST_NAME)
    with pytest.raises(ValueError, match="30 source and 30 target.*has 24 and 24"):
        GruAttnForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="outside \\[-1, 24\\)"):
        GruAttnShortlist(torch.full((VOCAB_SIZE, 2), 30), torch.tensor([1]), VOCAB_SIZE)
    with pytest.raises(ValueError, match="2-D integer tensor"):
        GruAttnShortlist(torch.zeros((VOCAB_SIZE, 2)), torch.tensor([1]), VOCAB_SIZE)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_safetensors"])
def test_corrupt_table_is_a_clear_error(tmp_path, damage):
    model = make_model()
    model.set_shortlist(whole_vocabulary())
    model.save_pretrained(tmp_path)
    path = tmp_path / SHORTLIST_NAME
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not a safetensors file")
    else:
        save_file({"weight": torch.zeros(2)}, path)  # a valid safetensors file, but not a table
    with pytest.raises(ValueError, match="shortlist|damaged"):
        GruAttnForConditionalGeneration.from_pretrained(tmp_path)
