"""Corpus translation metrics (sacreBLEU BLEU and chrF) and the `compute_metrics` hook for `Seq2SeqTrainer`.

The metrics are `evaluate` modules. The `evaluate` wheel ships no metric scripts and the Hub is often unreachable
(offline CI, air-gapped clusters), so this package carries its own `sacrebleu` and `chrf` modules under
`hf_gru_attn/metrics/<name>/<name>.py`. They call sacreBLEU itself, accept references in either nesting (see
[`reference_streams`]) and also return sacreBLEU's reproducibility signature, which the Hub modules do not.

Sources: Post (2018), "A Call for Clarity in Reporting BLEU Scores" (sacreBLEU signatures); mjpost/sacrebleu
issue #220 and huggingface/evaluate PR #49 (the two reference nestings); huggingface/transformers issues #22634 and
#24433 (`-100` in predictions/labels must become padding before decoding).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import evaluate
import huggingface_hub.constants
import numpy as np
import torch
from transformers import EvalPrediction, PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)

PACKAGED_METRICS_DIR = Path(__file__).resolve().parent / "metrics"
PACKAGED_METRICS = ("sacrebleu", "chrf")

# Label and prediction padding value used by `DataCollatorForSeq2Seq` and by `Trainer` when it concatenates batches.
IGNORE_INDEX = -100


def reference_streams(references: Sequence, num_predictions: int) -> list[list[str | None]]:
    """
    Turn per-example references into sacreBLEU's reference streams.

    sacreBLEU wants `refs[k][i]` = k-th reference of example i (one "stream" per reference set), while
    `evaluate`/`datasets` users write one entry per example. Mixing the two up gives no error, only a wrong score
    (mjpost/sacrebleu#220), so both accepted shapes are resolved here, in one place.

    Args:
        references (`Sequence[str]` or `Sequence[Sequence[str]]`):
            Either flat, one reference string per example (`["r1", "r2"]`), or nested, a list of one or more
            reference strings per example (`[["r1"], ["r2a", "r2b"]]`). The number of references may vary per
            example.
        num_predictions (`int`):
            Number of predictions (hypotheses) the references belong to.

    Returns:
        `list[list[str | None]]`: `max_refs` streams of `num_predictions` strings each; examples with fewer
        references than `max_refs` are padded with `None`, which sacreBLEU skips.

    Raises:
        ValueError: if `len(references) != num_predictions`, if an example has no reference, or if flat and
            nested entries are mixed.
    """
    if len(references) != num_predictions:
        raise ValueError(
            f"Got {num_predictions} predictions but {len(references)} references: give exactly one reference string, "
            "or one list of reference strings, per prediction."
        )
    if all(isinstance(ref, str) for ref in references):
        return [list(references)]
    if any(isinstance(refs, str) for refs in references):
        raise ValueError("References mix plain strings and lists of strings: use one of the two forms throughout.")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("Every prediction needs at least one reference; got an empty reference list.")
    max_refs = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(max_refs)]


def translation_metric_features() -> list[datasets.Features]:
    """
    Input features of the packaged translation metrics: string predictions with nested or flat string references.

    Returns:
        `list[datasets.Features]`: `evaluate` tries them in order on the first example of each batch, so the nested
        form (`references: Sequence(Value("string"))`) comes first and the flat one (`Value("string")`) second.
    """
    return [
        datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
        ),
        datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
    ]


def load_metric(name: str, **load_kwargs) -> evaluate.EvaluationModule:
    """
    Load an `evaluate` metric: from the Hub when it is reachable, otherwise the copy packaged with `hf_gru_attn`.

    The Hub is tried unless `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set; any failure there (no network,
    unknown name) is logged as a warning and the packaged module is loaded instead. Note that the Hub's `sacrebleu`
    and `chrf` modules return no `"signature"` key and accept only nested references; the packaged ones do both.

    Args:
        name (`str`):
            Metric name as on the Hub, e.g. `"sacrebleu"` or `"chrf"`. Offline, only the packaged metrics
            (`PACKAGED_METRICS`) are available.
        **load_kwargs:
            Passed on to `evaluate.load` (e.g. `keep_in_memory=True`, `experiment_id=...`).

    Returns:
        `evaluate.EvaluationModule`: the loaded metric.

    Raises:
        ValueError: if the Hub cannot be used and `name` is not one of `PACKAGED_METRICS`.
    """
    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        try:
            return evaluate.load(name, **load_kwargs)
        except Exception as err:  # any Hub failure (network, unknown name, bad script) means: use the packaged copy
            logger.warning(f"Could not load metric {name!r} from the Hub ({err}); using the packaged copy.")
    return load_packaged_metric(name, **load_kwargs)


def load_packaged_metric(name: str, **load_kwargs) -> evaluate.EvaluationModule:
    """
    Load one of the metric modules shipped inside `hf_gru_attn` (works offline, never touches the network).

    Args:
        name (`str`): one of `PACKAGED_METRICS` (`"sacrebleu"`, `"chrf"`).
        **load_kwargs: passed on to `evaluate.load`.

    Returns:
        `evaluate.EvaluationModule`: the metric; `compute()` returns sacreBLEU's score and `"signature"`.

    Raises:
        ValueError: if `name` is not a packaged metric.
    """
    if name not in PACKAGED_METRICS:
        raise ValueError(
            f"No packaged metric named {name!r}; available offline: {', '.join(PACKAGED_METRICS)}. "
            "Other metrics need the Hugging Face Hub (unset HF_HUB_OFFLINE)."
        )
    return evaluate.load(str(PACKAGED_METRICS_DIR / name / f"{name}.py"), **load_kwargs)


def compute_translation_metrics(predictions: Sequence[str], references: Sequence) -> dict[str, float | str]:
    """
    Corpus BLEU and chrF (sacreBLEU defaults: 13a tokenisation, exp smoothing; chrF2) with their signatures.

    Always uses the packaged metric modules, so the numbers do not depend on network access or on the Hub's copy
    of a module, and they equal `sacrebleu.corpus_bleu(predictions, streams).score` /
    `sacrebleu.corpus_chrf(...)` exactly.

    Args:
        predictions (`Sequence[str]`): one detokenised hypothesis per example.
        references (`Sequence[str]` or `Sequence[Sequence[str]]`):
            One reference per example, or a list of references per example (see [`reference_streams`]).

    Returns:
        `dict`: `{"bleu": float, "chrf": float, "bleu_signature": str, "chrf_signature": str}`, scores in 0..100.

    Raises:
        ValueError: if the numbers of predictions and references differ, or the references are malformed.
    """
    predictions, references = list(predictions), list(references)
    # Checked here too (the modules check again) so the error names the caller's inputs, not evaluate's internals.
    reference_streams(references, len(predictions))
    bleu = load_packaged_metric("sacrebleu", keep_in_memory=True).compute(
        predictions=predictions, references=references
    )
    chrf = load_packaged_metric("chrf", keep_in_memory=True).compute(predictions=predictions, references=references)
    return {
        "bleu": bleu["score"],
        "chrf": chrf["score"],
        "bleu_signature": bleu["signature"],
        "chrf_signature": chrf["signature"],
    }


def decode_token_ids(tokenizer: PreTrainedTokenizerBase, ids) -> list[str]:
    """
    Decode a batch of token ids that may contain `-100`, dropping special tokens.

    `DataCollatorForSeq2Seq` pads labels with `-100`, and `Trainer` pads generated predictions of different lengths
    with `-100` when it concatenates batches; `batch_decode` fails on such ids (OverflowError/TypeError,
    huggingface/transformers#22634, #24433), so they are replaced by `tokenizer.pad_token_id` first.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): tokenizer with a pad token.
        ids (`np.ndarray`, `torch.Tensor` or nested `list[list[int]]` of shape `(batch_size, sequence_length)`):
            Token ids; `-100` marks padding.

    Returns:
        `list[str]`: `batch_size` decoded strings without special tokens.

    Raises:
        ValueError: if the tokenizer has no pad token.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token, so `-100` cannot be replaced before decoding; set one.")
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    ids = np.where(ids == IGNORE_INDEX, tokenizer.pad_token_id, ids)
    return tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)


def build_compute_metrics(tokenizer: PreTrainedTokenizerBase) -> Callable[[EvalPrediction], dict[str, float]]:
    """
    Make the `compute_metrics` function for `Seq2SeqTrainer(..., args=Seq2SeqTrainingArguments(
    predict_with_generate=True))`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the target-side tokenizer used to decode predictions and labels.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: maps an `EvalPrediction` whose `predictions` are generated
        ids of shape `(num_examples, generated_length)` (starting with the decoder start token) and whose
        `label_ids` are `-100`-padded labels to `{"bleu", "chrf", "gen_len"}`; `gen_len` is the mean number of
        generated tokens after the decoder start token, EOS included, padding excluded. The returned function
        raises `ValueError` when given logits (i.e. `predict_with_generate=False`).
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):  # models returning extra outputs: the ids come first
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim != 2 or not np.issubdtype(predictions.dtype, np.integer):
            raise ValueError(
                f"compute_metrics needs generated token ids of shape (num_examples, length), got an array of shape "
                f"{predictions.shape} and dtype {predictions.dtype}: set `predict_with_generate=True`."
            )
        predictions = np.where(predictions == IGNORE_INDEX, tokenizer.pad_token_id, predictions)
        scores = compute_translation_metrics(
            decode_token_ids(tokenizer, predictions), decode_token_ids(tokenizer, eval_prediction.label_ids)
        )
        gen_len = np.count_nonzero(predictions[:, 1:] != tokenizer.pad_token_id, axis=1).mean()
        return {"bleu": scores["bleu"], "chrf": scores["chrf"], "gen_len": float(gen_len)}

    return compute_metrics
