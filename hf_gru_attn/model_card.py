"""Model card (`README.md`) for a saved GRU attention translation model, from the template `model_card.md`.

The card has YAML metadata (languages, licence, dataset, `library_name: transformers`, tags, `pipeline_tag` and a
`model-index` with the sacreBLEU/chrF results found in the model folder's `all_results.json`), then the template's
sections, with the architecture read from `config.json` and a usage snippet for the repo id (or the folder).

Sources: the Hub's model card specification (https://huggingface.co/docs/hub/model-cards and the annotated
`modelcard.md` template of huggingface/hub-docs), `huggingface_hub.ModelCardData`/`EvalResult`, which write the
metadata and the `model-index`.
"""

import json
import struct
from pathlib import Path
from string import Template

from huggingface_hub import EvalResult, ModelCardData


TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "model_card.md"

LANGUAGE_NAMES = {"cs": "Czech", "de": "German", "en": "English", "fr": "French"}
EXAMPLE_SENTENCES = {
    "cs": "Muž jede na kole.",
    "de": "Ein Mann fährt Fahrrad.",
    "en": "A man is riding a bike.",
    "fr": "Un homme fait du vélo.",
}
# all_results.json prefix -> (split name, dataset description); metric key -> (model-index metric type, name)
RESULT_SPLITS = {"test": ("test", "Multi30k test2016 (Flickr)"), "eval": ("validation", "Multi30k validation")}
RESULT_METRICS = {"bleu": ("sacrebleu", "sacreBLEU"), "chrf": ("chrf", "chrF")}


def count_parameters(model_dir: str | Path) -> int:
    """Number of stored parameters in the folder's `*.safetensors` files (tied weights are stored, so counted, once).

    Reads only the safetensors headers (8-byte little-endian length, then JSON with each tensor's shape), so no
    framework is needed.

    Args:
        model_dir: folder with the weights.

    Returns:
        The total number of elements; 0 when there is no safetensors file.
    """
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        for name, entry in header.items():
            if name != "__metadata__":
                size = 1
                for dim in entry["shape"]:
                    size *= dim
                total += size
    return total


def eval_results(results: dict) -> list[EvalResult]:
    """The `model-index` entries for the BLEU/chrF scores in `results` (the contents of `all_results.json`).

    Keys `<prefix>_<metric>` are used, with prefix `test` (Multi30k test2016) or `eval` (validation) and metric `bleu`
    or `chrf`; `<prefix>_<metric>_signature` (sacreBLEU's signature), when present, becomes the metric config.

    Args:
        results: metrics as written by `Trainer.save_metrics`.

    Returns:
        One `EvalResult` per score found, test before validation, BLEU before chrF.
    """
    entries = []
    for prefix, (split, dataset_name) in RESULT_SPLITS.items():
        for metric, (metric_type, metric_name) in RESULT_METRICS.items():
            value = results.get(f"{prefix}_{metric}")
            if value is None:
                continue
            entries.append(EvalResult(
                task_type="translation", task_name="Translation", dataset_type="multi30k", dataset_name=dataset_name,
                dataset_split=split, metric_type=metric_type, metric_name=metric_name, metric_value=round(value, 2),
                metric_config=results.get(f"{prefix}_{metric}_signature"),
            ))
    return entries


def _results_section(results: dict | None, entries: list[EvalResult]) -> str:
    if results is None:
        return "No results were recorded: `all_results.json` was missing when this card was written."
    if not entries:
        return "`all_results.json` holds no BLEU or chrF score."
    beams, sentences = results.get("test_num_beams"), results.get("test_num_sentences")
    lines = [
        "Corpus-level scores computed with sacreBLEU on detokenised output"
        + (f", beam search with {beams} beams" if beams else "")
        + (f", on {sentences:,} test sentences" if sentences else "") + ":",
        "",
        "| data | split | metric | score | sacreBLEU signature |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        # a table cell: the signature's pipes must be escaped, even inside a code span
        signature = "`{}`".format(entry.metric_config.replace("|", "\\|")) if entry.metric_config else "n/a"
        lines.append(f"| {entry.dataset_name} | {entry.dataset_split} | {entry.metric_name} | "
                     f"{entry.metric_value:.2f} | {signature} |")
    return "\n".join(lines)


def _training_section(results: dict | None, model_dir: Path) -> str:
    if not results or "train_wall_clock_minutes" not in results:
        return "No training record: `all_results.json` has no `train_wall_clock_minutes`."
    lines = [
        f"Trained with `scripts/train.py` for {results['train_wall_clock_minutes']:.1f} minutes of wall-clock "
        f"({results.get('epoch', 0):.1f} epochs, final training loss {results.get('train_loss', float('nan')):.3f}); "
        "the checkpoint with the best validation BLEU (greedy decoding of the validation set) was kept.",
    ]
    if (model_dir / "learning_curve.png").is_file():
        lines += ["", "![validation BLEU against training time](learning_curve.png)"]
    return "\n".join(lines)


def _architecture_rows(config: dict, num_parameters: int) -> str:
    rows = [("parameters", f"{num_parameters:,}")]
    rows += [(key, config[key]) for key in (
        "attention_type", "bidirectional_encoder", "encoder_layers", "decoder_layers", "embedding_size",
        "hidden_size", "vocab_size", "decoder_vocab_size", "share_embeddings", "tie_word_embeddings", "dropout",
    ) if key in config]
    return "\n".join(f"| {key} | `{value}` |" for key, value in rows)


def _usage_code(model_id: str, local: bool, example: str) -> str:
    where = "  # the folder holding these files; on the Hub, the repo id" if local else ""
    text = json.dumps(example, ensure_ascii=False)
    return "\n".join([
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline",
        "",
        f"model_id = {json.dumps(model_id)}{where}",
        "tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)",
        "model = AutoModelForSeq2SeqLM.from_pretrained(model_id, trust_remote_code=True)",
        f"inputs = tokenizer([{text}], return_tensors=\"pt\", padding=True)",
        "outputs = model.generate(**inputs, num_beams=5, max_new_tokens=64)",
        "print(tokenizer.batch_decode(outputs, skip_special_tokens=True))",
        "",
        "translator = pipeline(\"translation\", model=model_id, trust_remote_code=True)",
        f"print(translator([{text}], num_beams=5, max_new_tokens=64))",
    ])


def render_model_card(
    model_dir: str | Path,
    repo_id: str | None = None,
    *,
    source_lang: str = "de",
    target_lang: str = "en",
    license: str = "apache-2.0",
    template: str | Path | None = None,
) -> str:
    """Render the model card (`README.md` text) for the model saved in `model_dir`.

    Args:
        model_dir: folder written by `save_pretrained` (needs `config.json`; reads `all_results.json` and the
            safetensors headers when present).
        repo_id: Hub repo id used in the title and the usage snippet; None for a card next to a local model (the
            snippet then loads from `"."`).
        source_lang, target_lang: ISO 639-1 codes of the translation direction (the defaults are the training
            script's Multi30k De→En recipe).
        license: licence id for the metadata.
        template: the card template; defaults to `model_card.md` at the top of the repository.

    Returns:
        The card: YAML front matter (validated by `huggingface_hub.ModelCardData`), then the filled template.

    Raises:
        FileNotFoundError: no `config.json` in `model_dir`, or no template (the default template is not part of an
            installed wheel: run from the repository or pass `template`).
        KeyError: the template uses a placeholder this function does not fill.
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    results_path = model_dir / "all_results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    entries = eval_results(results or {})

    metadata = ModelCardData(
        language=[source_lang, target_lang],
        license=license,
        datasets=["multi30k"],
        library_name="transformers",
        pipeline_tag="translation",
        tags=["translation", "seq2seq", "gru", "rnn", "attention", "gru_attn", "custom_code"],
        metrics=["sacrebleu", "chrf"],
        model_name=model_name,
        eval_results=entries or None,
    )
    body = Template(Path(template or TEMPLATE_PATH).read_text(encoding="utf-8")).substitute(
        model_name=model_name,
        source_name=LANGUAGE_NAMES.get(source_lang, source_lang),
        target_name=LANGUAGE_NAMES.get(target_lang, target_lang),
        architecture_rows=_architecture_rows(config, count_parameters(model_dir)),
        results_section=_results_section(results, entries),
        training_section=_training_section(results, model_dir),
        usage_code=_usage_code(repo_id or ".", repo_id is None, EXAMPLE_SENTENCES.get(source_lang, "Hello world.")),
    )
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"
