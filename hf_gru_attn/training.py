"""Training helpers for `scripts/train.py`: the `Seq2SeqTrainer` subclass and sampler it uses, the output-folder and
checkpoint policy (resume from the newest complete checkpoint, never overwrite a finished run) and the learning-curve
plot. Training to a time budget is in `time_budget.py`.
"""

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import SequentialSampler
from transformers import Seq2SeqTrainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length

from .time_budget import TimeBudgetLRScheduler, TrainingClock


logger = logging.getLogger(__name__)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """
    `LengthGroupedSampler` whose order depends only on `seed` and the epoch (set by the Trainer through `set_epoch`).

    transformers' own draws the order from the global torch RNG at the start of each epoch, so a run resumed in the
    middle of an epoch got another order than the uninterrupted run from its first resumed step on (the RNG state is
    restored only after that draw), and DDP processes depend on their own RNG state to agree on one order.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class TranslationTrainer(Seq2SeqTrainer):
    """
    `Seq2SeqTrainer` whose evaluation and prediction score every example exactly once, in dataset order, and whose
    length-grouped training order is reproducible on resume ([`EpochSeededLengthGroupedSampler`]).

    - Training batches grouped by length (`--train_sampling_strategy group_by_length`) are grouped by the longer of
      source and target, not by `input_ids` alone (unless the dataset has a `--length_column_name` column): on
      Multi30k at batch 96 the mean padded target falls from 21.4 to 16.4 tokens (the source rises from 15.7 to
      16.5), and the decoder runs one step per target token.
    - Evaluation and test batches follow the dataset order even with `--train_sampling_strategy group_by_length`
      (transformers applies that length-grouped shuffle to evaluation too), so the rows of `predict()` line up with
      the raw test references.
    - Under DDP the samples that the distributed sampler repeats to even out the last batch are dropped
      (`gather_for_metrics`). `Seq2SeqTrainer` uses plain `gather` since huggingface/transformers#27025, for
      `num_return_sequences > 1`, which this recipe never uses; with plain `gather` an eval set of 7 sentences on 2
      processes gives `compute_metrics` 8 predictions.
    - With a `clock` that has a budget (`--max_train_minutes`), the learning-rate schedule is a
      [`TimeBudgetLRScheduler`]: `--lr_scheduler_type` over the time budget, warmup `--warmup_steps` as a fraction of
      it.

    Args:
        clock ([`TrainingClock`], *optional*): the run's clock; the other arguments are `Seq2SeqTrainer`'s.
    """

    def __init__(self, *args, clock: TrainingClock | None = None, **kwargs):
        self.clock = clock
        super().__init__(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.clock is None or self.clock.budget_seconds is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = TimeBudgetLRScheduler(
            self.optimizer if optimizer is None else optimizer,
            self.clock,
            self.args.lr_scheduler_type,
            warmup_fraction=self.args.warmup_steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            dataset = self.train_dataset if train_dataset is None else train_dataset
            columns = set(getattr(dataset, "column_names", None) or ())
            lengths = sampler.lengths
            if {"input_ids", "labels"} <= columns and self.args.length_column_name not in columns:
                lengths = [max(len(source), len(target)) for source, target in zip(dataset["input_ids"],
                                                                                    dataset["labels"])]
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, lengths, seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def evaluation_loop(self, *args, **kwargs):
        self.gather_function = self.accelerator.gather_for_metrics
        return super().evaluation_loop(*args, **kwargs)

    def _issue_warnings_after_load(self, load_result):
        # A checkpoint stores each tied weight once, under its source's name, so reloading one (resume, best model at
        # the end) reports the tied copies as missing; transformers only excuses `_keys_to_ignore_on_save` there.
        tied = self.model.get_expanded_tied_weights_keys(all_submodels=True)
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """
    Why a Trainer checkpoint folder cannot be resumed from, or `None` when it is complete.

    transformers writes checkpoints in place (no temporary folder and rename): weights, optimizer, scheduler, RNG
    state and finally `trainer_state.json`. A run killed while saving leaves a folder without `trainer_state.json`
    or with a truncated weights file, which `get_last_checkpoint` would still pick.
    """
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json, which the Trainer writes last"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"unreadable trainer_state.json ({err})"
    weights = [checkpoint / "model.safetensors"]
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        try:
            weights = [checkpoint / name for name in set(json.loads(index.read_text())["weight_map"].values())]
        except (OSError, ValueError, KeyError) as err:
            return f"unreadable {index.name} ({err})"
    elif not weights[0].is_file() and (checkpoint / "pytorch_model.bin").is_file():
        return None
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as f:  # checks that the file covers every tensor
                f.keys()
        except Exception as err:  # missing, truncated or garbled: safetensors raises its own error types
            return f"{path.name} cannot be read ({err})"
    return None


def complete_checkpoints(output_dir: str) -> Iterator[str]:
    """
    The complete `checkpoint-<step>` folders of `output_dir`, highest step first (by number, not name). Each is
    checked with [`checkpoint_problem`] only when the iteration reaches it; incomplete ones are logged and skipped.
    """
    pattern = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
    checkpoints = [
        (int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := pattern.fullmatch(p.name)) and p.is_dir()
    ]
    for _, path in sorted(checkpoints, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            yield str(path)
        else:
            logger.warning(f"Skipping checkpoint {path}: {problem} (the run was probably stopped while saving it).")


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-step `checkpoint-<step>` folder of `output_dir` that is complete; incomplete ones are logged."""
    return next(complete_checkpoints(output_dir), None)


def check_empty_output_dir(output_dir: str, overwrite: bool) -> None:
    """
    Checks, before any work starts, that a tool may write into `output_dir`: it does not exist yet, it is an empty
    folder, or `overwrite` is set (used by the converter and tokenizer scripts; `scripts/train.py`, which resumes,
    uses [`check_output_dir`]).

    Raises:
        ValueError: if `output_dir` exists and is not a folder, or is a non-empty folder and `overwrite` is not set.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {output_dir!r} exists and is not a folder.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"--output_dir {output_dir!r} is not empty; pass --overwrite_output_dir to write into it.")


def check_output_dir(output_dir: str, overwrite: bool) -> str | None:
    """
    Decides what to do with an existing output directory, before any work starts.

    Returns:
        The last checkpoint to resume from, or `None` to start fresh.

    Raises:
        ValueError: if the directory holds a finished model or other files and `overwrite` is not set.
    """
    path = Path(output_dir)
    if overwrite or not path.is_dir() or not any(path.iterdir()):
        return None
    last_checkpoint = last_complete_checkpoint(output_dir)
    if last_checkpoint is not None and not (path / "all_results.json").exists():
        logger.info(f"Resuming the interrupted run in {output_dir} from {last_checkpoint}.")
        return last_checkpoint
    raise ValueError(
        f"Output directory {output_dir} already holds a model or other files. Pass --overwrite_output_dir to train "
        "from scratch into it (its contents are replaced), or choose another --output_dir."
    )


def plot_learning_curve(curve: list, path: Path):
    """Draws validation BLEU against training wall-clock minutes (from `WallClockCallback.curve`) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(seconds / 60, metrics["eval_bleu"]) for seconds, metrics in curve if "eval_bleu" in metrics]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("training wall-clock (minutes)")
    ax.set_ylabel("validation sacreBLEU")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
