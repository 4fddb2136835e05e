"""Tests for `hf_gru_attn.evaluation` and the packaged `sacrebleu`/`chrf` evaluate modules (BL-11, BL-12, BL-33)."""

import math

import evaluate
import huggingface_hub.constants
import numpy as np
import pytest
import sacrebleu
from datasets import Dataset
from sacrebleu.metrics import BLEU, CHRF
from test_translate_scripts import tiny_model_and_tokenizer
from transformers import (
    DataCollatorForSeq2Seq,
    EvalPrediction,
    LogitsProcessor,
    LogitsProcessorList,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from hf_gru_attn.data import Seq2SeqCollator
from hf_gru_attn.evaluation import (
    build_compute_metrics,
    compute_translation_metrics,
    decode_token_ids,
    load_metric,
    load_packaged_metric,
    reference_streams,
)


PREDICTIONS = ["a b c d", "e f g h", "i j k l"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny_model_and_tokenizer()


# --- BL-33: both reference nestings give the sacreBLEU score of the right streams ---------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_bl33_identical_references_score_100(nested):
    references = [[ref] for ref in PREDICTIONS] if nested else list(PREDICTIONS)
    scores = compute_translation_metrics(PREDICTIONS, references)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


def test_bl33_changed_reference_scores_the_same_in_both_nestings():
    flat = ["a b c d", "e f g h", "x y z w"]
    from_flat = compute_translation_metrics(PREDICTIONS, flat)
    from_nested = compute_translation_metrics(PREDICTIONS, [[ref] for ref in flat])
    assert from_flat["bleu"] < 100.0
    assert from_flat == from_nested
    assert from_flat["bleu"] == sacrebleu.corpus_bleu(PREDICTIONS, [flat]).score
    assert from_flat["chrf"] == sacrebleu.corpus_chrf(PREDICTIONS, [flat]).score


@pytest.mark.parametrize(
    "references",
    [PREDICTIONS[:2], [[ref] for ref in PREDICTIONS[:2]], [*PREDICTIONS, "m n o p"]],
    ids=["flat-short", "nested-short", "flat-long"],
)
def test_bl33_reference_count_mismatch_raises(references):
    with pytest.raises(ValueError, match=r"3 predictions but \d references"):
        compute_translation_metrics(PREDICTIONS, references)
    with pytest.raises(ValueError):
        load_packaged_metric("sacrebleu", keep_in_memory=True).compute(predictions=PREDICTIONS, references=references)


def test_several_references_per_example_are_transposed_into_streams():
    references = [["a b c d", "a b x d"], ["e f y h"], ["q r s t", "i j k z"]]
    streams = [["a b c d", "e f y h", "q r s t"], ["a b x d", None, "i j k z"]]
    assert reference_streams(references, 3) == streams
    scores = compute_translation_metrics(PREDICTIONS, references)
    assert scores["bleu"] == sacrebleu.corpus_bleu(PREDICTIONS, streams).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(PREDICTIONS, streams).score
    assert scores["bleu_signature"].startswith("nrefs:var|")
    two_each = [["a b c d", "a b x d"], ["e f y h", "e f g h"], ["q r s t", "i j k z"]]
    assert compute_translation_metrics(PREDICTIONS, two_each)["bleu"] == (
        sacrebleu.corpus_bleu(PREDICTIONS, [list(refs) for refs in zip(*two_each)]).score
    )


@pytest.mark.parametrize(
    ("references", "message"),
    [(["a", ["b"], "c"], "mix"), ([["a"], [], ["c"]], "at least one reference")],
)
def test_malformed_references_raise(references, message):
    with pytest.raises(ValueError, match=message):
        reference_streams(references, 3)


def test_signatures_are_sacrebleus():
    scores = compute_translation_metrics(PREDICTIONS, PREDICTIONS)
    bleu, chrf = BLEU(), CHRF()
    bleu.corpus_score(PREDICTIONS, [PREDICTIONS])
    chrf.corpus_score(PREDICTIONS, [PREDICTIONS])
    assert scores["bleu_signature"] == str(bleu.get_signature())
    assert scores["chrf_signature"] == str(chrf.get_signature())
    assert scores["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"


def test_packaged_modules_take_options_and_batches():
    bleu = load_packaged_metric("sacrebleu")
    for prediction, reference in zip(PREDICTIONS, ["A B C D", "e f g h", "i j k x"]):
        bleu.add_batch(predictions=[prediction], references=[reference])
    result = bleu.compute(lowercase=True)
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [["A B C D", "e f g h", "i j k x"]], lowercase=True)
    assert result["score"] == expected.score and result["counts"] == expected.counts
    assert "case:lc" in result["signature"]
    chrf = load_packaged_metric("chrf").compute(predictions=PREDICTIONS, references=PREDICTIONS, word_order=2)
    assert chrf["score"] == pytest.approx(100.0) and chrf["word_order"] == 2 and "nw:2" in chrf["signature"]


# --- load_metric: Hub first when online, packaged copy otherwise --------------------------------------------------


def test_load_metric_offline_uses_packaged_module(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate, "load", _fail_for_hub_names(evaluate.load))
    assert "signature" in load_metric("sacrebleu").compute(predictions=["a"], references=["a"])
    with pytest.raises(ValueError, match="No packaged metric named 'bertscore'"):
        load_metric("bertscore")


def test_load_metric_online_prefers_hub_and_falls_back(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    real_load, hub_module = evaluate.load, object()
    monkeypatch.setattr(evaluate, "load", lambda path, **kwargs: hub_module)
    assert load_metric("chrf") is hub_module
    monkeypatch.setattr(evaluate, "load", _fail_for_hub_names(real_load))
    assert "signature" in load_metric("chrf").compute(predictions=["a"], references=["a"])


def _fail_for_hub_names(real_load):
    """An `evaluate.load` that fails for bare names (as it does with no network) and loads local paths."""

    def load(path, **kwargs):
        if "/" not in path:
            raise ConnectionError(f"no network for {path!r}")
        return real_load(path, **kwargs)

    return load


# --- BL-12: -100 in labels and predictions --------------------------------------------------------------------------


def test_bl12_decode_token_ids_replaces_minus_100(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    targets = ["the cat sat", "a dog ran in the park", "wir"]
    features = [{"input_ids": tokenizer(t)["input_ids"], "labels": tokenizer(t)["input_ids"]} for t in targets]
    labels = DataCollatorForSeq2Seq(tokenizer, model=model)(features)["labels"]
    assert (labels == -100).any()
    expected = tokenizer.batch_decode([f["labels"] for f in features], skip_special_tokens=True)
    for ids in (labels, labels.numpy(), labels.tolist()):
        decoded = decode_token_ids(tokenizer, ids)
        assert decoded == expected
        assert not any(special in text for text in decoded for special in ("<pad>", "</s>", "<s>"))


def test_compute_metrics_on_minus_100_padded_eval_prediction(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    start, pad = model.config.decoder_start_token_id, tokenizer.pad_token_id
    cat, dog = tokenizer("the cat sat on the mat")["input_ids"], tokenizer("a dog ran")["input_ids"]  # end: </s>
    predictions = np.full((2, 1 + max(len(cat), len(dog)) + 1), -100)
    predictions[0, : 1 + len(cat)] = [start, *cat]
    predictions[1, : 1 + len(dog) + 1] = [start, *dog, pad]
    labels = np.full((2, max(len(cat), len(dog)) + 2), -100)
    labels[0, : len(cat)] = cat
    labels[1, : len(dog)] = dog
    metrics = build_compute_metrics(tokenizer)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert set(metrics) == {"bleu", "chrf", "gen_len"}
    assert metrics["bleu"] == pytest.approx(100.0) and metrics["chrf"] == pytest.approx(100.0)
    assert metrics["gen_len"] == (len(cat) + len(dog)) / 2
    with pytest.raises(ValueError, match="predict_with_generate=True"):
        build_compute_metrics(tokenizer)(EvalPrediction(predictions=np.zeros((2, 3, 5)), label_ids=labels))


class LengthPerBatchSize(LogitsProcessor):
    """Makes every row of a batch of `b` sources exactly `lengths[b]` generated tokens long (EOS and pad banned
    before that, EOS forced then), so batches of different sizes end at different lengths and `Trainer` has to pad
    the concatenated predictions with -100 (the BL-12 situation)."""

    def __init__(self, tokenizer, lengths):
        self.eos_token_id, self.pad_token_id, self.lengths = tokenizer.eos_token_id, tokenizer.pad_token_id, lengths

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        if input_ids.shape[1] < self.lengths[input_ids.shape[0]]:  # decoder start + generated tokens so far
            scores[:, [self.eos_token_id, self.pad_token_id]] = -math.inf
        else:
            scores[:] = -math.inf
            scores[:, self.eos_token_id] = 0.0
        return scores


def _trainer(model, tokenizer, tmp_path, compute_metrics, collator_class=Seq2SeqCollator):
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, predict_with_generate=True, report_to="none",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    collator = collator_class(tokenizer, model=model)
    return Seq2SeqTrainer(
        model=model, args=args, data_collator=collator, processing_class=tokenizer, compute_metrics=compute_metrics
    )


SOURCES = ["the cat sat on the mat", "a dog", "wir gehen nach hause"]


def test_bl12_trainer_evaluate_with_unequal_generated_lengths(model_and_tokenizer, tmp_path, monkeypatch):
    model, tokenizer = model_and_tokenizer
    # Seq2SeqTrainer pads each batch's predictions with pad up to generation_config.max_length; below the generated
    # lengths it leaves them unequal, and the batches are then joined with -100 padding.
    monkeypatch.setattr(model.generation_config, "max_length", 1)
    seen = []
    compute_metrics = build_compute_metrics(tokenizer)

    def spy(eval_prediction):
        seen.append(eval_prediction)
        return compute_metrics(eval_prediction)

    dataset = Dataset.from_dict(dict(tokenizer(SOURCES), labels=tokenizer(SOURCES)["input_ids"]))
    processor = LengthPerBatchSize(tokenizer, lengths={2: 3, 1: 6})
    metrics = _trainer(model, tokenizer, tmp_path, spy).evaluate(
        dataset, num_beams=1, max_new_tokens=8, logits_processor=LogitsProcessorList([processor])
    )
    assert (seen[0].predictions == -100).any()  # the two batches did generate different lengths
    assert 0.0 <= metrics["eval_bleu"] <= 100.0 and math.isfinite(metrics["eval_bleu"])
    assert 0.0 <= metrics["eval_chrf"] <= 100.0
    assert metrics["eval_gen_len"] == pytest.approx((3 + 3 + 6) / 3)


@pytest.mark.parametrize(
    "collator_class",
    [
        pytest.param(
            DataCollatorForSeq2Seq,
            marks=pytest.mark.xfail(
                strict=True,
                raises=ValueError,
                reason="transformers 5.24: DataCollatorForSeq2Seq returns `labels: None` for unlabelled features and "
                "Seq2SeqTrainer.prediction_step tests `'labels' in inputs`, so it runs the loss forward without "
                "targets (BL-11 again); a collator must drop the key",
            ),
        ),
        Seq2SeqCollator,
    ],
    ids=["stock-collator", "package-collator"],
)
def test_bl11_predict_without_labels(model_and_tokenizer, tmp_path, collator_class):
    model, tokenizer = model_and_tokenizer
    dataset = Dataset.from_dict(dict(tokenizer(SOURCES)))
    trainer = _trainer(model, tokenizer, tmp_path, build_compute_metrics(tokenizer), collator_class)
    output = trainer.predict(dataset, max_new_tokens=5)
    assert output.predictions.shape[0] == 3
    assert (output.predictions[:, 0] == model.config.decoder_start_token_id).all()
    assert output.metrics.get("test_loss") is None
