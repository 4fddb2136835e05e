"""Model card (`README.md`) for a saved GRU attention translation model, from the template `model_card.md`.

The card has YAML metadata (languages, licence, dataset, `library_name: transformers`, tags, `pipeline_tag` and a
`model-index` with the sacreBLEU/chrF results found in the model folder's `all_results.json`), then the template's
sections, with the architecture read from `config.json`, the data named by the folder's `training_data.json`
([`TrainingData`], written by `scripts/train.py`; the bundled Multi30k when absent) and a usage snippet for the repo
id (or the folder).

Sources: the Hub's model card specification (https://huggingface.co/docs/hub/model-cards and the annotated
`modelcard.md` template of huggingface/hub-docs), `huggingface_hub.ModelCardData`/`EvalResult`, which write the
metadata and the `model-index`.
"""

import json
import struct
from dataclasses import asdict, dataclass, fields
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
# all_results.json prefix -> split name; metric key -> (model-index metric type, name)
RESULT_SPLITS = {"test": "test", "eval": "validation"}
RESULT_METRICS = {"bleu": ("sacrebleu", "sacreBLEU"), "chrf": ("chrf", "chrF")}

# What the card says about the bundled Multi30k (data/multi30k/README.md has its source, terms and citation).
MULTI30K_SPLITS = {"test": "Multi30k test2016 (Flickr)", "validation": "Multi30k validation"}
MULTI30K_TEXT = {
    "data_summary": "Multi30k, a corpus of short image descriptions",
    "data_use": 'Translating short, simple, descriptive sentences in the style of Multi30k ("A man in a blue shirt '
                'is riding a\n  bike.")',
    "training_data_section": """\
[Multi30k](https://github.com/multi30k/dataset) (WMT16 multimodal translation, task 1): 29,000 training, 1,014
validation and 1,000 test (test2016 Flickr) English–German sentence pairs, each describing a Flickr30K image. The
raw, untokenised files of the multi30k/dataset GitHub repository were used.

Terms of use, as stated by the dataset's README (the repository has no licence file): "The Multi30K dataset is
partially derived from the Flickr30K dataset. The Flickr30K dataset includes images obtained from Flickr. Use of the
images must abide by the Flickr Terms of Use. We do not own the copyright of the images. They are solely provided
for researchers and educators who wish to use the dataset for non-commercial research and/or educational purposes."
Check these terms before using this model outside research or teaching.

Citation requested for the English–German data:

```bibtex
@inproceedings{elliott-etal-2016-multi30k,
  title = {Multi30K: Multilingual English-German Image Descriptions},
  author = {Elliott, Desmond and Frank, Stella and Sima'an, Khalil and Specia, Lucia},
  booktitle = {Proceedings of the 5th Workshop on Vision and Language},
  pages = {70--74},
  year = {2016},
  doi = {10.18653/v1/W16-3210}
}
```""",
    "data_limitations": """\
- The vocabulary and style are those of short image captions: expect poor output on longer, complex or
  out-of-domain sentences, and unknown words where the tokenizer has no pieces for them.
- BLEU on Multi30k is not comparable with scores on news or web test sets.
- The captions were written by crowd workers about a fixed set of photos and carry their stereotypes (for example
  about gender and occupations); the translations can reproduce or amplify them.""",
}
OTHER_DATA_LIMITATIONS = """\
- The vocabulary and style are those of the training data: expect poor output on text of other domains, and unknown
  words where the tokenizer has no pieces for them.
- The translations can reproduce or amplify the stereotypes and other biases of the training data."""


@dataclass(frozen=True)
class TrainingData:
    """
    The data a model was trained and scored on, as `scripts/train.py`'s data arguments of the same names: a Hub
    dataset (`dataset_name`, `dataset_config_name`) or local files (`train_file`, `validation_file`, `test_file`).
    With neither `dataset_name` nor `train_file` the run used the bundled Multi30k (as `scripts/train.py` does).

    `scripts/train.py` saves it as `training_data.json` in the model folder, which the card (also when
    `scripts/push_to_hub.py` renders it) reads.
    """

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None

    FILE_NAME = "training_data.json"

    @classmethod
    def from_arguments(cls, data_args) -> "TrainingData":
        """The fields of the same names of `data_args` (`scripts/train.py`'s `DataTrainingArguments`)."""
        return cls(**{field.name: getattr(data_args, field.name) for field in fields(cls)})

    @property
    def bundled(self) -> bool:
        """True for the bundled Multi30k: no `dataset_name` and no `train_file`."""
        return self.dataset_name is None and self.train_file is None

    def save(self, model_dir: str | Path) -> None:
        """Writes `training_data.json` into `model_dir`."""
        text = json.dumps(asdict(self), indent=2) + "\n"
        (Path(model_dir) / self.FILE_NAME).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, model_dir: str | Path) -> "TrainingData":
        """The `training_data.json` of `model_dir`; the bundled Multi30k when there is none (older folders).

        Raises:
            ValueError: the file is not a JSON object of these fields.
        """
        path = Path(model_dir) / cls.FILE_NAME
        if not path.is_file():
            return cls()
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a JSON object of {sorted(asdict(cls()))} ({error}).") from None

    def split_names(self) -> dict[str, str | None]:
        """The card's name for each split (`train`, `validation`, `test`): a file or a Hub dataset split."""
        if self.bundled:
            return {"train": "Multi30k train", **MULTI30K_SPLITS}
        if self.dataset_name is not None:
            config = f" ({self.dataset_config_name})" if self.dataset_config_name else ""
            return {split: f"{self.dataset_name}{config} {split}" for split in ("train", "validation", "test")}
        return {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}

    def dataset_type(self, split: str) -> str:
        """The model-index `dataset.type` of a split: the Hub dataset id, or the file (there is no Hub id)."""
        if self.bundled:
            return "multi30k"
        return self.dataset_name or self.split_names()[split]

    def hub_datasets(self) -> list[str] | None:
        """The YAML `datasets:` list: Hub dataset ids only (the Hub links them), so None for local files."""
        if self.bundled:
            return ["multi30k"]
        return [self.dataset_name] if self.dataset_name is not None else None

    def card_text(self) -> dict[str, str]:
        """The template's data placeholders: `data_summary`, `data_use`, `training_data_section`,
        `data_limitations`."""
        if self.bundled:
            return MULTI30K_TEXT
        names = self.split_names()
        if self.dataset_name is not None:
            config = f", configuration `{self.dataset_config_name}`" if self.dataset_config_name else ""
            summary = f"the `{self.dataset_name}` dataset{config}"
            section = (
                f"The [`{self.dataset_name}`](https://huggingface.co/datasets/{self.dataset_name}) dataset{config}, "
                "loaded with `datasets.load_dataset`: its `train` split for training, its `validation` split (when "
                "it has one) for checkpoint selection and its `test` split for the scores below. See the dataset's "
                "card for its source, licence and terms of use."
            )
        else:
            summary = f"parallel data from the file `{self.train_file}`"
            uses = {"train": "training", "validation": "validation (checkpoint selection)", "test": "test (scores)"}
            lines = [f"- {uses[split]}: " + (f"`{name}`" if name else "none") for split, name in names.items()]
            section = "\n".join([
                "Local parallel files given to `scripts/train.py`, not part of this repository:", "", *lines, "",
                "The source, licence and terms of use of this data are those of where it came from.",
            ])
        return {
            "data_summary": summary,
            "data_use": "Translating text like its training data (see [Training data](#training-data))",
            "training_data_section": section,
            "data_limitations": OTHER_DATA_LIMITATIONS,
        }


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


def eval_results(results: dict, data: TrainingData | None = None) -> list[EvalResult]:
    """The `model-index` entries for the BLEU/chrF scores in `results` (the contents of `all_results.json`).

    Keys `<prefix>_<metric>` are used, with prefix `test` or `eval` (validation) and metric `bleu` or `chrf`;
    `<prefix>_<metric>_signature` (sacreBLEU's signature), when present, becomes the metric config.

    Args:
        results: metrics as written by `Trainer.save_metrics`.
        data: the data the scores are on; default the bundled Multi30k (test2016 and validation).

    Returns:
        One `EvalResult` per score found, test before validation, BLEU before chrF.
    """
    data = data or TrainingData()
    names = data.split_names()
    entries = []
    for prefix, split in RESULT_SPLITS.items():
        for metric, (metric_type, metric_name) in RESULT_METRICS.items():
            value = results.get(f"{prefix}_{metric}")
            if value is None:
                continue
            entries.append(EvalResult(
                task_type="translation", task_name="Translation", dataset_type=data.dataset_type(split),
                dataset_name=names[split] or split, dataset_config=data.dataset_config_name,
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
    if results.get("checkpoints_averaged", 0) > 1:
        kept = (f"the average of the last {results['checkpoints_averaged']} checkpoints was kept, as its validation "
                f"BLEU (greedy decoding of the validation set, {results['eval_averaged_bleu']:.2f}) beat the best "
                f"single checkpoint's ({results['eval_best_bleu']:.2f}).")
    else:
        kept = "the checkpoint with the best validation BLEU (greedy decoding of the validation set) was kept."
    lines = [
        f"Trained with `scripts/train.py` for {results['train_wall_clock_minutes']:.1f} minutes of wall-clock "
        f"({results.get('epoch', 0):.1f} epochs, final training loss {results.get('train_loss', float('nan')):.3f}); "
        + kept,
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
        model_dir: folder written by `save_pretrained` (needs `config.json`; reads `all_results.json`,
            `training_data.json` (see [`TrainingData`]; without it the card names the bundled Multi30k) and the
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
        ValueError: `training_data.json` is not a JSON object of [`TrainingData`]'s fields.
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    results_path = model_dir / "all_results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    data = TrainingData.load(model_dir)
    entries = eval_results(results or {}, data)

    metadata = ModelCardData(
        language=[source_lang, target_lang],
        license=license,
        datasets=data.hub_datasets(),
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
        **data.card_text(),
    )
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"
