#!/usr/bin/env python
"""
Train (or fine-tune) a GRU attention translation model with `Seq2SeqTrainer`, in the style of transformers'
`examples/pytorch/translation/run_translation.py`.

With only `--output_dir` it runs the default recipe: Multi30k De->En from the bundled data, a joint BPE tokenizer
trained on the training split, training with validation BLEU for checkpoint selection and early stopping, then
test2016 with beam search. `--preset quick` is a few-minute version for demos and smoke tests. Arguments may also
come from one JSON file: `python scripts/train.py args.json`.

Writes into `--output_dir`: the model (weights, config, generation config, code), the tokenizer, `README.md` (model
card), `all_results.json` (sacreBLEU, chrF and their signatures), `training_data.json` (the data arguments, which
the model card names), `learning_curve.png` and the Trainer checkpoints.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


# This folder holds scripts/evaluate.py, named like the `evaluate` library: keep it off sys.path.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    HfArgumentParser,
    Seq2SeqTrainingArguments,
    set_seed,
)

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration  # noqa: E402
from hf_gru_attn.averaging import keep_checkpoint_average_if_better  # noqa: E402
from hf_gru_attn.cpu_threads import LoadAwareThreadsCallback  # noqa: E402
from hf_gru_attn.data import Seq2SeqCollator, load_bundled_multi30k, load_parallel_dataset, tokenize_dataset  # noqa: E402
from hf_gru_attn.decoding_dtype import choose_decoding_dtype  # noqa: E402
from hf_gru_attn.evaluation import build_compute_metrics, compute_translation_metrics, decode_token_ids  # noqa: E402
from hf_gru_attn.model_card import TrainingData, render_model_card  # noqa: E402
from hf_gru_attn.shortlist import build_shortlist  # noqa: E402
from hf_gru_attn.time_budget import TrainingClock, WallClockCallback, check_warmup_fraction  # noqa: E402
from hf_gru_attn.tokenization import train_tokenizer  # noqa: E402
from hf_gru_attn.training import TranslationTrainer, check_output_dir, plot_learning_curve  # noqa: E402


logger = logging.getLogger(__name__)

# Each preset is a list of command-line arguments placed before the user's, so any flag the user gives wins.
COMMON = [
    "--embedding_size", "256", "--hidden_size", "512", "--bidirectional_encoder", "true",
    "--encoder_layers", "1", "--decoder_layers", "1", "--attention_type", "additive",
    "--dropout", "0.3", "--share_embeddings", "true", "--tie_word_embeddings", "true",
    "--vocab_size", "8000", "--learning_rate", "2e-3", "--lr_scheduler_type", "linear",
    "--weight_decay", "0.0", "--max_grad_norm", "1.0",
    "--label_smoothing_factor", "0.1", "--per_device_train_batch_size", "96",
    "--per_device_eval_batch_size", "128", "--train_sampling_strategy", "group_by_length",
    "--eval_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", "5",
    "--load_best_model_at_end", "true", "--metric_for_best_model", "bleu", "--greater_is_better", "true",
    "--predict_with_generate", "true", "--generation_num_beams", "1", "--generation_max_length", "80",
    "--num_beams", "5", "--early_stopping_patience", "3",
    "--logging_steps", "50", "--report_to", "none", "--use_cpu", "true", "--seed", "42",
    "--dataloader_num_workers", "0",
]
PRESETS = {
    # A time budget: the schedule runs over 29 minutes whatever the machine's speed (the epoch count only bounds it).
    "default": COMMON + [
        "--max_train_minutes", "29", "--eval_every_minutes", "4", "--num_train_epochs", "1000",
        "--warmup_steps", "0.04", "--average_last_checkpoints", "3", "--bf16", "auto",
    ],
    "quick": COMMON + [
        "--embedding_size", "128", "--hidden_size", "256", "--vocab_size", "2000",
        "--max_train_samples", "3000", "--max_eval_samples", "200", "--max_predict_samples", "200",
        "--num_train_epochs", "2", "--warmup_steps", "20", "--per_device_train_batch_size", "64",
        "--logging_steps", "10",
    ],
}


@dataclass
class ModelArguments:
    """Which model to train: a new one (architecture flags) or an existing one to fine-tune."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Existing model directory or Hub id to fine-tune (its tokenizer is kept)."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Existing tokenizer directory or Hub id; default: train one on the data."}
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size of a newly trained tokenizer."})
    embedding_size: int = field(default=256, metadata={"help": "Token embedding size (new models)."})
    hidden_size: int = field(default=512, metadata={"help": "Decoder GRU size (new models)."})
    encoder_layers: int = field(default=1, metadata={"help": "Encoder GRU layers (new models)."})
    decoder_layers: int = field(default=1, metadata={"help": "Decoder GRU layers (new models)."})
    bidirectional_encoder: bool = field(default=True, metadata={"help": "Bidirectional encoder (new models)."})
    attention_type: str = field(default="additive", metadata={"help": "additive | dot | general (new models)."})
    dropout: float = field(default=0.3, metadata={"help": "Dropout probability (new models)."})
    share_embeddings: bool = field(default=True, metadata={"help": "Share source/target embeddings (new models)."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Tie output layer to target embeddings."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models' own code when loading."})


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on (names as in transformers' run_translation.py)."""

    source_lang: str = field(default="de", metadata={"help": "Source language code."})
    target_lang: str = field(default="en", metadata={"help": "Target language code."})
    dataset_name: str | None = field(default=None, metadata={"help": "A datasets Hub dataset name (online)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data: JSON lines ({'translation': {...}}), a TSV, or a prefix such as "
                  "data/train for data/train.<lang> line-aligned files."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same forms."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, same forms."})
    max_source_length: int = field(default=128, metadata={"help": "Source tokens kept (longer are truncated)."})
    max_target_length: int = field(default=128, metadata={"help": "Target tokens kept (longer are truncated)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debug)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test set."})
    num_beams: int = field(default=5, metadata={"help": "Beams for the final test evaluation and saved config."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


@dataclass
class RecipeArguments:
    """How the run is driven: preset, output directory policy, stopping rules."""

    preset: str = field(default="default", metadata={"help": "default | quick: argument defaults to start from."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train from scratch into an output_dir that already holds a run."}
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation BLEU."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Training budget in wall-clock minutes: the learning-rate schedule runs over this time "
                  "(--warmup_steps is then a fraction of it) and training stops when it is spent."},
    )
    average_last_checkpoints: int = field(
        default=0,
        metadata={"help": "At the end, average the last K checkpoints and keep the average if its validation BLEU "
                  "beats the best checkpoint's (needs --save_total_limit >= K); 0 or 1: no averaging."},
    )
    use_shortlist: bool = field(
        default=False,
        metadata={"help": "After training, build the vocabulary shortlist from the training pairs (top 10 targets per "
                  "source token, 100 frequent ones), save it with the model and decode with it (use_shortlist)."},
    )
    adapt_threads_to_load: bool = field(
        default=True,
        metadata={"help": "On CPU, use fewer torch threads while other processes keep some of our cores busy."},
    )
    eval_every_minutes: float | None = field(
        default=None,
        metadata={"help": "Evaluate and save every this many training minutes (instead of --eval_strategy's "
                  "cadence), and at the end."},
    )


def load_pretrained(auto_class, name_or_path: str, trust_remote_code: bool):
    """`auto_class.from_pretrained(name_or_path)`; raises `ValueError` saying what to pass when it cannot load."""
    try:
        return auto_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:  # no such folder, not a model folder, or a Hub id that cannot be reached offline
        raise ValueError(
            f"Cannot load {name_or_path!r}: it is not a folder with a saved model and tokenizer, nor a Hub model id "
            f"that can be downloaded ({str(error).splitlines()[0]}). Pass the output_dir of an earlier train.py run."
        ) from None


def resolve_bf16_auto(parser: HfArgumentParser, argv: list[str]) -> list[str]:
    """
    Replaces the value of the last `--bf16` flag, when it is `auto`, by `true` where bf16 matmuls at the model's
    shapes measure faster than float32 on the training device (native AVX512-BF16/AMX, bf16 GPUs), else `false`
    ([`~hf_gru_attn.decoding_dtype.choose_decoding_dtype`], measured once per machine and cached). The shapes are
    those of a new model from the architecture flags, with the batch size's rows. An earlier `--bf16 auto` (a
    preset's, overridden by a later flag) becomes `false` without a measurement.
    """
    values = [i + 1 for i, flag in enumerate(argv[:-1]) if flag == "--bf16"]
    auto = bool(values) and argv[values[-1]] == "auto"
    argv = ["false" if i in values and value == "auto" else value for i, value in enumerate(argv)]
    if not auto:
        return argv
    model_args, _, training_args, _, _ = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    config = GruAttnConfig(
        vocab_size=model_args.vocab_size, embedding_size=model_args.embedding_size,
        hidden_size=model_args.hidden_size, bidirectional_encoder=model_args.bidirectional_encoder,
        attention_type=model_args.attention_type, tie_word_embeddings=model_args.tie_word_embeddings,
    )
    device = "cuda" if not training_args.use_cpu and torch.cuda.is_available() else "cpu"
    dtype = choose_decoding_dtype(config, device, rows=training_args.per_device_train_batch_size)
    argv[values[-1]] = "true" if dtype == torch.bfloat16 else "false"
    return argv


def parse_arguments(argv: list[str]):
    """Parses presets, a JSON file or command-line flags into the four argument dataclasses."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments, RecipeArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0], encoding="utf-8") as f:
            argv = [a for key, value in json.load(f).items() for a in (f"--{key}", str(value))]
    preset = "default"  # the last --preset given wins, as for every other flag
    for flag, value in zip(argv, argv[1:]):
        if flag == "--preset":
            preset = value
    if preset not in PRESETS:
        parser.error(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    model_args, data_args, training_args, recipe_args, unknown = parser.parse_args_into_dataclasses(
        args=resolve_bf16_auto(parser, PRESETS[preset] + argv), return_remaining_strings=True
    )
    if unknown:
        parser.error(f"unknown arguments: {' '.join(unknown)} (see --help)")
    return model_args, data_args, training_args, recipe_args


def load_raw_datasets(data_args: DataTrainingArguments, cache_dir: str):
    """The bundled Multi30k when no data is named, else the user's files or Hub dataset."""
    if data_args.dataset_name is None and data_args.train_file is None:
        return load_bundled_multi30k(data_args.source_lang, data_args.target_lang)
    return load_parallel_dataset(
        source_lang=data_args.source_lang,
        target_lang=data_args.target_lang,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        cache_dir=cache_dir,
    )


def main(argv: list[str] | None = None):
    model_args, data_args, training_args, recipe_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    transformers.utils.logging.set_verbosity_warning()

    clock = TrainingClock(recipe_args.max_train_minutes)
    clock_callback = WallClockCallback(clock, recipe_args.eval_every_minutes)
    if clock.budget_seconds is not None:
        check_warmup_fraction(training_args.warmup_steps)
    last_checkpoint = check_output_dir(training_args.output_dir, recipe_args.overwrite_output_dir)
    logger.info(f"Training {'under bf16 autocast' if training_args.bf16 else 'in float32'}.")
    output_dir = Path(training_args.output_dir)
    cache_dir = str(output_dir / "cache")
    set_seed(training_args.seed)

    raw_datasets = load_raw_datasets(data_args, cache_dir)
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                         ("test", data_args.max_predict_samples)):
        if split in raw_datasets and limit is not None:
            raw_datasets[split] = raw_datasets[split].select(range(min(limit, len(raw_datasets[split]))))
    if "train" not in raw_datasets:
        raise ValueError("No training split: pass --train_file or --dataset_name with a train split.")
    if len(raw_datasets["train"]) == 0:
        raise ValueError(
            f"The training data ({data_args.train_file or data_args.dataset_name or 'bundled'}) has no sentence pair "
            "with both sides non-empty (or --max_train_samples is 0): nothing to train on."
        )

    # Tokenizer: the fine-tuned model's, a named one, the one of an interrupted run, or a new one.
    tokenizer_source = model_args.model_name_or_path or model_args.tokenizer_name
    if tokenizer_source is None and last_checkpoint is not None:
        tokenizer_source = last_checkpoint
    if tokenizer_source is not None:
        tokenizer = load_pretrained(AutoTokenizer, tokenizer_source, model_args.trust_remote_code)
    else:
        start = time.perf_counter()
        texts = (
            example[lang]
            for example in raw_datasets["train"]["translation"]
            for lang in (data_args.source_lang, data_args.target_lang)
        )
        tokenizer = train_tokenizer(texts, vocab_size=model_args.vocab_size)
        logger.info(f"Trained a {len(tokenizer)}-token tokenizer in {time.perf_counter() - start:.1f} s.")

    if model_args.model_name_or_path is not None:
        model = load_pretrained(AutoModelForSeq2SeqLM, model_args.model_name_or_path, model_args.trust_remote_code)
        if len(tokenizer) > model.config.decoder_vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
                f"{model.config.decoder_vocab_size}: use the model's own tokenizer."
            )
    else:
        config = GruAttnConfig(
            vocab_size=len(tokenizer),
            embedding_size=model_args.embedding_size,
            hidden_size=model_args.hidden_size,
            encoder_layers=model_args.encoder_layers,
            decoder_layers=model_args.decoder_layers,
            bidirectional_encoder=model_args.bidirectional_encoder,
            attention_type=model_args.attention_type,
            dropout=model_args.dropout,
            share_embeddings=model_args.share_embeddings,
            tie_word_embeddings=model_args.tie_word_embeddings,
            max_source_positions=data_args.max_source_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.bos_token_id,
        )
        model = GruAttnForConditionalGeneration(config)
    model.generation_config.num_beams = data_args.num_beams
    logger.info(f"Model: {model.num_parameters():,} parameters.")

    start = time.perf_counter()
    tokenized = tokenize_dataset(
        raw_datasets,
        tokenizer,
        source_lang=data_args.source_lang,
        target_lang=data_args.target_lang,
        max_source_length=data_args.max_source_length,
        max_target_length=data_args.max_target_length,
        num_proc=data_args.preprocessing_num_workers,
        cache_dir=cache_dir,
    )
    logger.info(f"Tokenized the data in {time.perf_counter() - start:.1f} s.")

    callbacks = [clock_callback]
    if recipe_args.adapt_threads_to_load and training_args.device.type == "cpu":
        callbacks.append(LoadAwareThreadsCallback())
    if training_args.load_best_model_at_end and "validation" in tokenized:
        callbacks.append(EarlyStoppingCallback(recipe_args.early_stopping_patience))
    trainer = TranslationTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),
        data_collator=Seq2SeqCollator(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
        callbacks=callbacks,
        clock=clock,
    )

    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    train_minutes = clock.read() / 60
    metrics = dict(train_result.metrics, train_wall_clock_minutes=train_minutes)
    if recipe_args.average_last_checkpoints > 1 and training_args.load_best_model_at_end and "validation" in tokenized:
        metrics.update(keep_checkpoint_average_if_better(trainer, recipe_args.average_last_checkpoints))
    if recipe_args.use_shortlist:
        model = trainer.model
        model.set_shortlist(build_shortlist(
            tokenized["train"]["input_ids"], tokenized["train"]["labels"], model.config.vocab_size,
            model.config.decoder_vocab_size, special_ids=tokenizer.all_special_ids,
        ))
        model.config.use_shortlist = True
    trainer.save_model()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    plot_learning_curve(clock_callback.curve, output_dir / "learning_curve.png")

    if "test" in tokenized:
        predictions = trainer.predict(tokenized["test"], metric_key_prefix="test", num_beams=data_args.num_beams)
        hypotheses = decode_token_ids(tokenizer, predictions.predictions)
        references = [example[data_args.target_lang] for example in raw_datasets["test"]["translation"]]
        test_metrics = {f"test_{k}": v for k, v in compute_translation_metrics(hypotheses, references).items()}
        test_metrics["test_num_beams"] = data_args.num_beams
        test_metrics["test_num_sentences"] = len(hypotheses)
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        (output_dir / "test_predictions.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")

    TrainingData.from_arguments(data_args).save(output_dir)
    (output_dir / "README.md").write_text(render_model_card(
        str(output_dir), source_lang=data_args.source_lang, target_lang=data_args.target_lang
    ), encoding="utf-8")
    logger.info(f"Model, tokenizer, card and results written to {output_dir} ({train_minutes:.1f} min of training).")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data, languages or output folder: say what to do
        sys.exit(f"train.py: error: {error}")
