"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints of one training run.

Averaging the last checkpoints of a run (Vaswani et al. 2017, "Attention Is All You Need", section 6.1: the last
5 or 20 checkpoints, written at 10-minute intervals) gives a model that usually scores higher than any single one of
them, at no training cost. The behaviour follows fairseq's `scripts/average_checkpoints.py` (the K newest
checkpoints or explicit ones, float tensors averaged with float accumulation); Marian's `--exponential-smoothing`
is the alternative that keeps a running average of the weights during training instead.

Checkpoints are folders written by `save_pretrained` or the Trainer (`checkpoint-<step>/`): `config.json` and
safetensors weights (`model.safetensors`, or shards listed in `model.safetensors.index.json`). A tied weight is
stored once, under its source's name, so the mean is taken over the stored tensors and the ties are restored when
the mean is loaded into a model ([`load_averaged_weights`]).
"""

import json
import logging
from itertools import islice
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EarlyStoppingCallback, PreTrainedModel, Trainer

from .training import complete_checkpoints


logger = logging.getLogger(__name__)


# config.json fields that record how a checkpoint was written, not the architecture.
IGNORED_CONFIG_FIELDS = ("transformers_version", "_name_or_path")


def _read_config(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Checkpoint {checkpoint} has no readable config.json ({error}): pass folders written by save_pretrained "
            "or the Trainer (checkpoint-<step>)."
        ) from None


def _read_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    index = checkpoint / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        weights = {}
        for name in files:
            weights.update(load_file(str(checkpoint / name)))
        return weights
    except Exception as error:  # missing, truncated or garbled: safetensors raises its own error types
        raise ValueError(
            f"Checkpoint {checkpoint} has no readable safetensors weights ({error}); it may be incomplete (a run "
            "stopped while saving it) or hold pickle weights only (.bin), which are not averaged."
        ) from None


def _check_same_architecture(configs: list[dict], checkpoints: list[Path]) -> None:
    reference = {k: v for k, v in configs[0].items() if k not in IGNORED_CONFIG_FIELDS}
    for config, checkpoint in zip(configs[1:], checkpoints[1:]):
        other = {k: v for k, v in config.items() if k not in IGNORED_CONFIG_FIELDS}
        differences = [
            f"{field!r}: {reference.get(field)!r} vs {other.get(field)!r}"
            for field in sorted(reference.keys() | other.keys()) if reference.get(field) != other.get(field)
        ]
        if differences:
            raise ValueError(
                f"Checkpoints of different architectures, config.json of {checkpoints[0]} vs {checkpoint}: "
                f"{'; '.join(differences)}. Average checkpoints of one run."
            )


def average_checkpoints(checkpoint_dirs: list[str]) -> dict[str, torch.Tensor]:
    """
    The element-wise arithmetic mean of the weights stored in `checkpoint_dirs` (fairseq's
    `scripts/average_checkpoints.py`; Vaswani et al. 2017, section 6.1).

    Floating-point tensors are summed in float64 and the mean is cast back to each tensor's own dtype (float32,
    bfloat16 ...). Integer and bool tensors (buffers such as counters or masks) cannot be averaged: they must be
    equal in every checkpoint and are returned as they are.

    Args:
        checkpoint_dirs: one or more folders with `config.json` and safetensors weights, e.g. `checkpoint-<step>/`.

    Returns:
        The averaged weights under the stored names (a tied weight appears once, as in the checkpoints); each
        tensor has the shape and dtype it has in the checkpoints. Load them with [`load_averaged_weights`].

    Raises:
        ValueError: no checkpoint given; a folder without a readable `config.json` or safetensors weights; configs
            that differ in an architecture field (named in the message); weights with different names, shapes or
            dtypes; an integer or bool tensor that differs between checkpoints.
    """
    if not checkpoint_dirs:
        raise ValueError("No checkpoint to average: pass at least one checkpoint folder.")
    checkpoints = [Path(path) for path in checkpoint_dirs]
    _check_same_architecture([_read_config(checkpoint) for checkpoint in checkpoints], checkpoints)
    first = _read_weights(checkpoints[0])
    sums = {name: tensor.double() if tensor.is_floating_point() else tensor for name, tensor in first.items()}
    for checkpoint in checkpoints[1:]:
        weights = _read_weights(checkpoint)
        if weights.keys() != first.keys():
            raise ValueError(
                f"Checkpoints {checkpoints[0]} and {checkpoint} store different weights: only in the first "
                f"{sorted(first.keys() - weights.keys())}, only in the second {sorted(weights.keys() - first.keys())}."
            )
        for name, tensor in weights.items():
            if (tensor.shape, tensor.dtype) != (first[name].shape, first[name].dtype):
                raise ValueError(
                    f"Weight {name!r} is {first[name].dtype} of shape {tuple(first[name].shape)} in "
                    f"{checkpoints[0]} but {tensor.dtype} of shape {tuple(tensor.shape)} in {checkpoint}."
                )
            if tensor.is_floating_point():
                sums[name] += tensor.double()
            elif not torch.equal(tensor, first[name]):
                raise ValueError(
                    f"Non-float tensor {name!r} ({tensor.dtype}) differs between {checkpoints[0]} and {checkpoint}: "
                    "integer and bool tensors cannot be averaged."
                )
    return {
        name: (total / len(checkpoints)).to(first[name].dtype) if first[name].is_floating_point() else total
        for name, total in sums.items()
    }


def last_checkpoints(output_dir: str, k: int) -> list[str]:
    """
    The `k` highest-step complete `checkpoint-<step>` folders of a training run's `output_dir`, highest first.
    Incomplete checkpoints (a run stopped while saving) are skipped and logged, as when a run resumes
    ([`hf_gru_attn.training.complete_checkpoints`]).

    Raises:
        ValueError: `k` ≤ 0, `output_dir` is not a folder, or it has fewer than `k` complete checkpoints.
    """
    if k <= 0:
        raise ValueError(f"The number of checkpoints to average must be at least 1, got {k}.")
    if not Path(output_dir).is_dir():
        raise ValueError(f"{output_dir} is not a folder: pass the output_dir of a training run.")
    checkpoints = list(islice(complete_checkpoints(output_dir), k))
    if len(checkpoints) < k:
        raise ValueError(
            f"Cannot average the last {k} checkpoints: {output_dir} has only {len(checkpoints)} complete "
            "checkpoint-<step> folders (with save_total_limit the Trainer deletes older ones). Pass a smaller number."
        )
    return checkpoints


def average_last_checkpoints(output_dir: str, k: int) -> dict[str, torch.Tensor]:
    """
    The mean of the weights of the `k` highest-step complete checkpoints of a training run: [`average_checkpoints`]
    of [`last_checkpoints`]. At the end of training, load it into the trained model with [`load_averaged_weights`]
    before saving the model.

    Args:
        output_dir: the run's output folder, holding `checkpoint-<step>/` folders.
        k: how many checkpoints to average (fairseq's `--num-update-checkpoints`).

    Returns:
        The averaged weights, as [`average_checkpoints`].

    Raises:
        ValueError: as [`last_checkpoints`] and [`average_checkpoints`].
    """
    return average_checkpoints(last_checkpoints(output_dir, k))


def load_averaged_weights(model: PreTrainedModel, state_dict: dict[str, torch.Tensor]) -> None:
    """
    Loads averaged weights (from [`average_checkpoints`]) into `model` in place and re-ties its tied weights, which
    the checkpoints store only once.

    Raises:
        ValueError: the weights do not fit the model: missing names (other than tied copies), unexpected names, or
            other shapes.
    """
    expected = model.state_dict()
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)
    missing = sorted(name for name in expected.keys() - state_dict.keys() if name not in tied)
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong_shape = sorted(name for name in state_dict.keys() & expected.keys()
                         if state_dict[name].shape != expected[name].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"The averaged weights do not fit the {type(model).__name__}: missing {missing}, unexpected {unexpected}, "
            f"other shape {wrong_shape}. Average checkpoints of this model's training run."
        )
    model.load_state_dict(state_dict, strict=False)
    model.tie_weights()


def save_averaged_model(checkpoint_dirs: list[str], output_dir: str) -> PreTrainedModel:
    """
    Averages `checkpoint_dirs` ([`average_checkpoints`]) and writes a complete model folder into `output_dir` with
    the model's `save_pretrained`: weights, config, generation config and the remote code files, plus the tokenizer
    when the checkpoints hold one. Config, generation config and tokenizer are those of the first checkpoint.

    Args:
        checkpoint_dirs: the checkpoint folders to average.
        output_dir: where to write the model; the caller decides whether it may be written into
            ([`hf_gru_attn.training.check_empty_output_dir`]).

    Returns:
        The averaged model (in evaluation mode).

    Raises:
        ValueError: as [`average_checkpoints`]; `output_dir` is one of `checkpoint_dirs`; the checkpoints hold
            different tokenizers (`tokenizer.json`).
    """
    if any(Path(output_dir).resolve() == Path(path).resolve() for path in checkpoint_dirs):
        raise ValueError(f"--output_dir {output_dir} is one of the checkpoints to average: choose another folder.")
    state_dict = average_checkpoints(checkpoint_dirs)
    tokenizers = {Path(path, "tokenizer.json").read_bytes() if Path(path, "tokenizer.json").is_file() else None
                  for path in checkpoint_dirs}
    if len(tokenizers) > 1:
        raise ValueError(
            f"The checkpoints {checkpoint_dirs} have different tokenizers (tokenizer.json): average the checkpoints "
            "of one run."
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint_dirs[0])
    load_averaged_weights(model, state_dict)
    model.save_pretrained(output_dir)
    if tokenizers != {None}:
        AutoTokenizer.from_pretrained(checkpoint_dirs[0]).save_pretrained(output_dir)
    return model.eval()


def keep_checkpoint_average_if_better(trainer: Trainer, k: int) -> dict[str, float]:
    """
    After training with `load_best_model_at_end`: averages the weights of the run's last `k` checkpoints
    ([`average_last_checkpoints`]), evaluates the average on the
    validation set and keeps it in `trainer.model` if its `metric_for_best_model` beats the best checkpoint's, else
    restores the best checkpoint's weights.

    Returns:
        `{"eval_best_<metric>": ..., "eval_averaged_<metric>": ..., "checkpoints_averaged": k or 0}` (0: the best
        checkpoint was kept).

    Raises:
        ValueError: as `average_last_checkpoints` (fewer than `k` complete checkpoints, other architectures, ...).
    """
    metric = trainer.args.metric_for_best_model
    best = trainer.state.best_metric
    trainer.pop_callback(EarlyStoppingCallback)  # training is over; the average's evaluation is no stopping signal
    best_weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    load_averaged_weights(trainer.model, average_last_checkpoints(trainer.args.output_dir, k))
    averaged = trainer.evaluate(metric_key_prefix="eval_averaged")[f"eval_averaged_{metric}"]
    better = averaged > best if trainer.args.greater_is_better else averaged < best
    if better:
        logger.info(f"The average of the last {k} checkpoints has validation {metric} {averaged:.2f} (best single "
                    f"checkpoint {best:.2f}): keeping the average.")
    else:
        logger.info(f"The average of the last {k} checkpoints has validation {metric} {averaged:.2f}, not better than "
                    f"the best checkpoint's {best:.2f}: keeping the best checkpoint.")
        trainer.model.load_state_dict(best_weights)
    return {f"eval_best_{metric}": best, f"eval_averaged_{metric}": averaged, "checkpoints_averaged": k * better}
