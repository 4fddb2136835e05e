"""Crash safety of `scripts/train.py`: resuming after a kill, and never resuming from a half-written checkpoint.

transformers 5.24 writes a checkpoint in place, with no temporary folder and rename: `checkpoint-<step>/` gets the
weights, tokenizer, optimizer, scheduler and RNG state, and `trainer_state.json` last. `get_last_checkpoint` returns
the highest-numbered folder whatever it holds, and `Trainer.train(resume_from_checkpoint=...)` then fails on the
missing `trainer_state.json` or the truncated `model.safetensors`. `scripts/train.py` therefore resumes from the
newest *complete* checkpoint and logs the ones it skips (`hf_gru_attn.training.last_complete_checkpoint`).

Fast tests check that choice on fabricated output folders. The slow test kills (SIGKILL) a real training run while it
writes a checkpoint, re-runs the same command and compares the final weights with an uninterrupted run.
"""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
import torch
from safetensors.torch import load_file, save_file

import hf_gru_attn
from hf_gru_attn.training import check_output_dir, checkpoint_problem


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def write_checkpoint(folder: Path, step: int, state: bool = True, truncate_weights: bool = False) -> Path:
    """A fabricated `checkpoint-<step>` folder: weights (whole or cut in half) and, if `state`, trainer_state.json."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    weights = checkpoint / "model.safetensors"
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(weights))
    if truncate_weights:
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    if state:
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return checkpoint


def test_resume_skips_half_written_checkpoints_and_says_so(tmp_path, caplog):
    complete_9 = write_checkpoint(tmp_path, 9)
    write_checkpoint(tmp_path, 10, state=False)  # killed before trainer_state.json: the usual case
    write_checkpoint(tmp_path, 11, truncate_weights=True)  # weights cut short (e.g. a full disk)
    write_checkpoint(tmp_path, 2)
    (tmp_path / "checkpoint-12").write_text("not a folder", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        chosen = check_output_dir(str(tmp_path), overwrite=False)
    assert chosen == str(complete_9)  # numerically newest complete one (9 < 10 < 11, though "9" > "11" as text)
    skipped = [record.getMessage() for record in caplog.records if "Skipping checkpoint" in record.getMessage()]
    assert len(skipped) == 2
    assert str(tmp_path / "checkpoint-11") in skipped[0] and "model.safetensors cannot be read" in skipped[0]
    assert str(tmp_path / "checkpoint-10") in skipped[1] and "no trainer_state.json" in skipped[1]


def test_checkpoint_problem_names_what_is_wrong(tmp_path):
    assert checkpoint_problem(write_checkpoint(tmp_path, 1)) is None
    assert "no trainer_state.json" in checkpoint_problem(write_checkpoint(tmp_path, 2, state=False))
    truncated = write_checkpoint(tmp_path, 3, truncate_weights=True)
    assert "model.safetensors cannot be read" in checkpoint_problem(truncated)
    garbled = write_checkpoint(tmp_path, 4)
    (garbled / "trainer_state.json").write_text('{"global_step": 4', encoding="utf-8")  # cut mid-write
    assert "unreadable trainer_state.json" in checkpoint_problem(garbled)
    missing = write_checkpoint(tmp_path, 5)
    (missing / "model.safetensors").unlink()
    assert "model.safetensors cannot be read" in checkpoint_problem(missing)


def test_output_dir_without_complete_checkpoint_or_finished_is_refused(tmp_path):
    write_checkpoint(tmp_path, 4, state=False)
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        check_output_dir(str(tmp_path), overwrite=False)
    assert check_output_dir(str(tmp_path), overwrite=True) is None
    finished = tmp_path / "finished"
    write_checkpoint(finished, 4)
    (finished / "all_results.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="already holds a model"):
        check_output_dir(str(finished), overwrite=False)


# ---------------------------------------------------------------------------------------------------------------
# Slow: SIGKILL while a checkpoint is being written, then resume.

GERMAN = "ein hund katze mann frau kind läuft sitzt spielt auf dem gras ball rot blau".split()  # noqa: SIM905
ENGLISH = "a dog cat man woman child runs sits plays on the grass ball red blue".split()  # noqa: SIM905

# Runs scripts/train.py as __main__; SLOW_SAVE_AT=<step> makes the Trainer pause for a minute inside the checkpoint
# of that step, after the weights are written and before the optimizer and trainer_state.json, so that the test can
# kill it there. STEP_SLEEP slows every training step down (sleep, no CPU) so the run does not end first.
PAUSING_WRAPPER = '''
import os, runpy, sys, time

import transformers

training_step, save_optimizer = transformers.Trainer.training_step, transformers.Trainer._save_optimizer_and_scheduler


def slow_training_step(self, *args, **kwargs):
    time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
    return training_step(self, *args, **kwargs)


def pausing_save_optimizer(self, output_dir):
    if os.environ.get("SLOW_SAVE_AT") == str(self.state.global_step):
        time.sleep(60)
    return save_optimizer(self, output_dir)


transformers.Trainer.training_step = slow_training_step
transformers.Trainer._save_optimizer_and_scheduler = pausing_save_optimizer
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def write_toy_corpus(folder: Path) -> None:
    """`train` (256 pairs) and `test` (7 pairs) as `<split>.de`/`<split>.en`: word-for-word pairs of 3-7 words."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 256), ("test", 7)):
        sentences = [[rng.randrange(len(GERMAN)) for _ in range(rng.randint(3, 7))] for _ in range(size)]
        for lang, words in (("de", GERMAN), ("en", ENGLISH)):
            lines = [" ".join(words[i] for i in sentence) for sentence in sentences]
            (folder / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def script_env(**extra) -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(Path(hf_gru_attn.__file__).resolve().parent.parent),
        **extra,
    )


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    data = tmp_path / "data"
    write_toy_corpus(data)
    wrapper = tmp_path / "pausing_train.py"
    wrapper.write_text(PAUSING_WRAPPER, encoding="utf-8")
    # The quick preset as it is (length-grouped shuffling, dropout 0.3, batch 64 = 4 steps per epoch), but a tiny
    # model, 30 steps over 7.5 epochs, a checkpoint every 10 steps and no validation.
    args = [
        "--preset", "quick", "--train_file", data / "train", "--test_file", data / "test",
        "--embedding_size", "16", "--hidden_size", "32", "--vocab_size", "120", "--max_steps", "30",
        "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "10", "--load_best_model_at_end", "false",
        "--logging_steps", "1", "--num_beams", "2", "--generation_max_length", "12", "--seed", "3",
    ]
    command = [sys.executable, wrapper, SCRIPTS / "train.py", *args]

    def run_to_the_end(output_dir: Path) -> str:
        result = subprocess.run(
            [str(part) for part in [*command, "--output_dir", output_dir]],
            env=script_env(), capture_output=True, text=True, timeout=900, check=False,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
        return result.stderr

    full, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    run_to_the_end(full)

    process = subprocess.Popen(
        [str(part) for part in [*command, "--output_dir", killed]],
        env=script_env(STEP_SLEEP="0.2", SLOW_SAVE_AT="20"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    half_written = killed / "checkpoint-20"
    try:
        deadline = time.monotonic() + 600
        while not (half_written / "model.safetensors").is_file() and process.poll() is None:
            assert time.monotonic() < deadline, "checkpoint-20 never appeared"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the 60 s pause: weights and tokenizer written, optimizer and trainer state not
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert (killed / "checkpoint-10" / "trainer_state.json").is_file()
    assert (half_written / "model.safetensors").is_file() and not (half_written / "trainer_state.json").exists()
    assert not (killed / "all_results.json").exists()

    log = run_to_the_end(killed)  # the same command again
    assert f"Skipping checkpoint {half_written}: no trainer_state.json" in log
    assert f"Resuming the interrupted run in {killed} from {killed / 'checkpoint-10'}" in log

    expected, resumed = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name
    history = [json.loads((folder / "trainer_state.json").read_text())["log_history"] for folder in (full, killed)]
    losses = [[entry["loss"] for entry in log_history if "loss" in entry] for log_history in history]
    assert len(losses[0]) == 30 and losses[1] == losses[0]

    # The test predictions are in test-file order (the length-grouped shuffle is for training batches only).
    from hf_gru_attn.translation import load_translation_model, translate

    model, tokenizer = load_translation_model(killed, device="cpu")
    sources = (data / "test.de").read_text(encoding="utf-8").splitlines()
    hypotheses = translate(model, tokenizer, sources, num_beams=2, max_length=12)
    assert (killed / "test_predictions.txt").read_text(encoding="utf-8").splitlines() == hypotheses
    references = (data / "test.en").read_text(encoding="utf-8").splitlines()
    results = json.loads((killed / "all_results.json").read_text())
    assert results["test_bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score


@pytest.mark.parametrize(("share", "tie"), [(True, True), (False, True), (True, False)])
def test_reloading_a_checkpoint_does_not_report_tied_weights_as_missing(tmp_path, share, tie):
    # A checkpoint stores each tied weight once; reloading it (resume, best model at the end) must tie the copies
    # again without transformers' "There were missing keys" warning, which would suggest a damaged checkpoint.
    from transformers import Seq2SeqTrainingArguments
    from transformers.utils import logging as hf_logging

    from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
    from hf_gru_attn.training import TranslationTrainer

    torch.manual_seed(0)
    config = GruAttnConfig(vocab_size=30, embedding_size=8, hidden_size=8, share_embeddings=share,
                           tie_word_embeddings=tie)
    saved = GruAttnForConditionalGeneration(config)
    saved.save_pretrained(tmp_path / "checkpoint-1")
    model = GruAttnForConditionalGeneration(config)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    trainer = TranslationTrainer(model=model, args=args)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logging.get_logger("transformers").addHandler(handler)
    try:
        trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
    assert not [record for record in records if "missing keys" in record.getMessage()]
    for name, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    for target, source in model.get_expanded_tied_weights_keys(all_submodels=True).items():
        assert model.get_parameter(target) is model.get_parameter(source)
