"""Multi-process (DDP) training with `torchrun` on CPU (gloo), compared with one process at the same global batch.

The slow test runs `scripts/train.py` three times on a toy word-for-word "translation" task (15 German words, each
mapped to one English word, sentences of 3-7 words):

1. one process trains a base model for 120 steps, so that its translations already score a BLEU above 0;
2. one process fine-tunes it for 8 steps at batch 8 (`per_device_train_batch_size 8`);
3. `torchrun --nproc_per_node 2` fine-tunes it for 8 steps at 2 x 4 (`per_device_train_batch_size 4`).

Runs 2 and 3 use the same seed, dropout 0 and `--train_sampling_strategy sequential`, so each step sees the same 8
examples, and they must log the same training loss and gradient norm at every step (to float rounding: DDP averages
two half-batch gradients, each scaled by the token count of the whole batch). Final weights are not compared entry
by entry: Adam turns float-rounding differences of near-zero gradients into differences of up to the learning rate
(measured: 6.5e-3 on `energy_proj.weight`, below 1e-6 on every GRU weight).

Validation and test sets have 7 sentences, an odd size that two processes cannot split evenly: every
`compute_metrics` call must see exactly 7 predictions (the distributed sampler repeats one sentence to even out the
last batch, and the repeat must be dropped), and the test BLEU reported by the DDP run must equal the BLEU of its
final weights recomputed here, in one process.

`compute_metrics` is observed through a small wrapper that patches `hf_gru_attn.evaluation.build_compute_metrics`
and then runs `scripts/train.py` as `__main__`, so the script itself runs unchanged.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from safetensors.torch import load_file

import hf_gru_attn


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
GERMAN = "ein hund katze mann frau kind läuft sitzt spielt auf dem gras ball rot blau".split()  # noqa: SIM905
ENGLISH = "a dog cat man woman child runs sits plays on the grass ball red blue".split()  # noqa: SIM905
NUM_EVAL = 7  # odd: 2 processes with eval batches of 2 get 4 + 4 slots for 7 sentences

COUNTING_WRAPPER = '''
"""Runs scripts/train.py as __main__, appending len(predictions) of every compute_metrics call to a per-rank file."""
import json, os, runpy, sys

import hf_gru_attn.evaluation as evaluation

build = evaluation.build_compute_metrics
record = os.environ["COUNT_FILE"] + ".rank" + os.environ.get("RANK", "0")


def counting_build_compute_metrics(tokenizer):
    compute = build(tokenizer)

    def counting_compute(prediction):
        predictions = prediction.predictions
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        with open(record, "a") as f:
            f.write(json.dumps({"predictions": len(predictions), "labels": len(prediction.label_ids)}) + "\\n")
        return compute(prediction)

    return counting_compute


evaluation.build_compute_metrics = counting_build_compute_metrics
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def write_toy_corpus(folder: Path) -> None:
    """`train` (256 pairs), `val` and `test` (7 pairs each) as `<split>.de`/`<split>.en`: word-for-word pairs."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 256), ("val", NUM_EVAL), ("test", NUM_EVAL)):
        sentences = [[rng.randrange(len(GERMAN)) for _ in range(rng.randint(3, 7))] for _ in range(size)]
        for lang, words in (("de", GERMAN), ("en", ENGLISH)):
            lines = [" ".join(words[i] for i in sentence) for sentence in sentences]
            (folder / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def common_args(data: Path) -> list[str]:
    """Flags shared by every run: the toy data, a tiny model, deterministic order, evaluation of 7 sentences."""
    return [
        "--preset", "quick",
        "--train_file", data / "train", "--validation_file", data / "val", "--test_file", data / "test",
        "--embedding_size", "32", "--hidden_size", "64", "--vocab_size", "120", "--dropout", "0",
        "--label_smoothing_factor", "0", "--learning_rate", "1e-2", "--warmup_steps", "2",
        "--train_sampling_strategy", "sequential", "--load_best_model_at_end", "false", "--logging_steps", "1",
        "--generation_max_length", "12", "--num_beams", "2", "--generation_num_beams", "2",
        "--per_device_eval_batch_size", "2", "--ddp_find_unused_parameters", "false", "--seed", "7",
    ]


def run(command: list, cwd: Path, count_file: Path | None = None) -> None:
    """Runs a command with one torch thread per process; fails the test with the output tail on a non-zero exit."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(Path(hf_gru_attn.__file__).resolve().parent.parent),
    )
    if count_file is not None:
        env["COUNT_FILE"] = str(count_file)
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{(result.stdout + result.stderr)[-6000:]}"


def training_log(output_dir: Path, key: str) -> dict[int, float]:
    """Step -> logged training value (`"loss"`, `"grad_norm"`), from the run's `trainer_state.json`."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry[key] for entry in history if "loss" in entry}


def metric_calls(count_file: Path) -> list[dict]:
    """Every recorded `compute_metrics` call of every rank."""
    calls = []
    for path in sorted(count_file.parent.glob(count_file.name + ".rank*")):
        calls += [json.loads(line) for line in path.read_text().splitlines()]
    return calls


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_at_the_same_global_batch(tmp_path):
    data = tmp_path / "data"
    write_toy_corpus(data)
    wrapper = tmp_path / "counting_train.py"
    wrapper.write_text(COUNTING_WRAPPER, encoding="utf-8")
    train = SCRIPTS / "train.py"
    python = Path(sys.executable)
    torchrun = python.parent / "torchrun"

    base = tmp_path / "base"
    run([python, train, *common_args(data), "--max_steps", "120", "--eval_strategy", "no", "--save_strategy", "no",
         "--output_dir", base], tmp_path)

    finetune = [*common_args(data), "--model_name_or_path", base, "--max_steps", "8", "--eval_strategy", "steps",
                "--eval_steps", "4", "--save_strategy", "steps", "--save_steps", "4"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([python, wrapper, train, *finetune, "--per_device_train_batch_size", "8", "--output_dir", single],
        tmp_path, count_file=tmp_path / "single_counts")
    run([torchrun, "--standalone", "--nproc_per_node", "2", wrapper, train, *finetune,
         "--per_device_train_batch_size", "4", "--output_dir", ddp], tmp_path, count_file=tmp_path / "ddp_counts")

    # Two processes really ran, each on half of the global batch of 8.
    ddp_state = json.loads((ddp / "trainer_state.json").read_text())
    assert ddp_state["train_batch_size"] == 4 and ddp_state["global_step"] == 8
    assert ddp_state["epoch"] == pytest.approx(8 * 8 / 256)  # 8 steps of 8 of the 256 training pairs

    # Same loss and gradient norm at every step.
    single_losses, ddp_losses = training_log(single, "loss"), training_log(ddp, "loss")
    assert sorted(ddp_losses) == sorted(single_losses) == list(range(1, 9))
    for key in ("loss", "grad_norm"):
        single_values, ddp_values = training_log(single, key), training_log(ddp, key)
        for step, value in single_values.items():
            # measured: relative differences up to 2e-6 (loss) and 1.5e-5 (grad norm), growing with the steps
            assert ddp_values[step] == pytest.approx(value, rel=1e-4), f"{key} at step {step}"

    # Every compute_metrics call saw each of the 7 sentences once: 2 evaluations + 1 test prediction per process.
    assert metric_calls(tmp_path / "single_counts") == [{"predictions": NUM_EVAL, "labels": NUM_EVAL}] * 3
    assert metric_calls(tmp_path / "ddp_counts") == [{"predictions": NUM_EVAL, "labels": NUM_EVAL}] * 6

    # The DDP test BLEU is the BLEU of its final weights, translated here in one process with the same settings.
    from hf_gru_attn.translation import load_translation_model, translate

    model, tokenizer = load_translation_model(ddp, device="cpu")
    sources = (data / "test.de").read_text(encoding="utf-8").splitlines()
    references = (data / "test.en").read_text(encoding="utf-8").splitlines()
    hypotheses = translate(model, tokenizer, sources, batch_size=2, num_beams=2, max_length=12)
    ddp_results = json.loads((ddp / "all_results.json").read_text())
    single_results = json.loads((single / "all_results.json").read_text())
    assert (ddp / "test_predictions.txt").read_text(encoding="utf-8").splitlines() == hypotheses
    assert ddp_results["test_bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert ddp_results["test_bleu"] > 0
    assert ddp_results["test_bleu"] == single_results["test_bleu"]
    print(
        "losses single/ddp:", [round(single_losses[s], 6) for s in range(1, 9)],
        [round(ddp_losses[s], 6) for s in range(1, 9)],
        "max |dw|:", max((load_file(ddp / "model.safetensors")[k] - t).abs().max().item()
                         for k, t in load_file(single / "model.safetensors").items()),
        "test BLEU single/ddp:", single_results["test_bleu"], ddp_results["test_bleu"],
    )
