"""Training to a wall-clock budget (`hf_gru_attn.time_budget`): the learning rate follows the fraction of the budget
spent, whatever the step rate; resume keeps the elapsed time; evaluation every few minutes; a stop when the budget is
spent; rank 0's clock in a distributed run; and clear errors for a bad budget.

Every test drives the clock with a fake timer, so nothing depends on how fast this machine is.
"""

import io
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import Seq2SeqTrainingArguments, get_scheduler

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.time_budget import TimeBudgetLRScheduler, TrainingClock, WallClockCallback
from hf_gru_attn.training import TranslationTrainer


class FakeTimer:
    """A timer that stands still until `advance` is called (or moves `per_call` seconds at every reading)."""

    def __init__(self, per_call: float = 0.0):
        self.now = 1000.0
        self.per_call = per_call

    def advance(self, seconds: float):
        self.now += seconds

    def __call__(self) -> float:
        self.now += self.per_call
        return self.now


def linear_with_warmup(fraction: float, warmup: float) -> float:
    """transformers' `linear` schedule multiplier, written out: linear warmup to 1, then linear decay to 0."""
    if fraction < warmup:
        return fraction / warmup
    return max(0.0, (1 - fraction) / (1 - warmup))


def optimizer_for(learning_rate: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=learning_rate)


@pytest.mark.parametrize("steps_to_half", [3, 50, 1000])
def test_learning_rate_at_half_the_budget_is_the_scheduled_value_whatever_the_step_rate(steps_to_half):
    timer = FakeTimer()
    clock = TrainingClock(budget_minutes=10, timer=timer)
    optimizer = optimizer_for(0.01)
    scheduler = TimeBudgetLRScheduler(optimizer, clock, "linear", warmup_fraction=0.1)
    clock.start()
    for _ in range(steps_to_half):  # 300 s, half the budget, in this many steps
        timer.advance(300 / steps_to_half)
        optimizer.step()
        clock.update()
        scheduler.step()
    assert clock.elapsed() == pytest.approx(300)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * linear_with_warmup(0.5, 0.1))  # 0.01 * 5/9


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant_with_warmup"])
def test_schedule_follows_transformers_shape_over_the_budget(schedule):
    timer = FakeTimer()
    clock = TrainingClock(budget_minutes=1, timer=timer)
    optimizer = optimizer_for(1.0)
    scheduler = TimeBudgetLRScheduler(optimizer, clock, schedule, warmup_fraction=0.2)
    # The same transformers schedule counted in steps, 100 steps over the budget: positions must agree.
    stepped_optimizer = optimizer_for(1.0)
    stepped = get_scheduler(schedule, stepped_optimizer, num_warmup_steps=20, num_training_steps=100)
    clock.start()
    for _ in range(100):
        timer.advance(0.6)
        clock.update()
        optimizer.step()
        scheduler.step()
        stepped_optimizer.step()
        stepped.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(stepped_optimizer.param_groups[0]["lr"], abs=1e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0 if schedule != "constant_with_warmup" else 1.0)


def test_scheduler_state_carries_the_elapsed_time_across_a_resume():
    timer = FakeTimer()
    clock = TrainingClock(budget_minutes=10, timer=timer)
    optimizer = optimizer_for()
    scheduler = TimeBudgetLRScheduler(optimizer, clock, "linear", warmup_fraction=0.0)
    clock.start()
    timer.advance(240)
    clock.update()
    optimizer.step()
    scheduler.step()
    state = scheduler.state_dict()
    assert state["elapsed_seconds"] == pytest.approx(240)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored_state = torch.load(buffer, weights_only=True)  # how the Trainer reads scheduler.pt

    # A new process: its timer starts anywhere; the run continues 60 s later at 300 s = half the budget.
    new_timer = FakeTimer()
    new_timer.now = 7.0
    new_clock = TrainingClock(budget_minutes=10, timer=new_timer)
    new_optimizer = optimizer_for()
    new_scheduler = TimeBudgetLRScheduler(new_optimizer, new_clock, "linear", warmup_fraction=0.0)
    new_scheduler.load_state_dict(restored_state)
    new_clock.start()
    assert new_clock.elapsed() == pytest.approx(240)
    new_timer.advance(60)
    new_clock.update()
    new_optimizer.step()
    new_scheduler.step()
    assert new_clock.elapsed() == pytest.approx(300)
    assert new_optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5)


@pytest.mark.parametrize("budget", [0, -3, float("nan"), float("inf")])
def test_a_budget_that_is_not_positive_is_a_clear_error(budget):
    with pytest.raises(ValueError, match=r"--max_train_minutes must be a number of minutes > 0"):
        TrainingClock(budget)


def test_warmup_given_in_steps_with_a_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="fraction of the time budget"):
        TimeBudgetLRScheduler(optimizer_for(), TrainingClock(5), "linear", warmup_fraction=200)
    with pytest.raises(ValueError, match="needs a clock with a budget"):
        TimeBudgetLRScheduler(optimizer_for(), TrainingClock(None), "linear", warmup_fraction=0.1)
    with pytest.raises(ValueError, match="--eval_every_minutes must be > 0"):
        WallClockCallback(TrainingClock(5), eval_every_minutes=0)


# --------------------------------------------------------------------------------------------------------------------
# Through the Trainer: a fake timer that moves one second per reading, i.e. per optimizer step


def tiny_model() -> GruAttnForConditionalGeneration:
    torch.manual_seed(0)
    return GruAttnForConditionalGeneration(GruAttnConfig(
        vocab_size=20, embedding_size=8, hidden_size=8, dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    ))


def toy_dataset(count: int = 64) -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    pairs = []
    for i in range(count):
        source = torch.randint(3, 20, (1 + i % 5,), generator=generator).tolist()
        pairs.append({"input_ids": source, "attention_mask": [1] * len(source), "labels": source + [2]})
    return pairs


def collate(features: list[dict]) -> dict:
    width = max(len(f["input_ids"]) for f in features)
    label_width = max(len(f["labels"]) for f in features)
    return {
        "input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
        "attention_mask": torch.tensor([f["attention_mask"] + [0] * (width - len(f["input_ids"])) for f in features]),
        "labels": torch.tensor([f["labels"] + [-100] * (label_width - len(f["labels"])) for f in features]),
    }


def run_trainer(output_dir, budget_minutes=0.5, eval_every_minutes=10 / 60, resume=None, timer=None):
    """Trains the tiny model with a budget of `budget_minutes`; returns (trainer, callback, timer)."""
    timer = timer or FakeTimer(per_call=1.0)
    clock = TrainingClock(budget_minutes, timer=timer)
    callback = WallClockCallback(clock, eval_every_minutes)
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        per_device_train_batch_size=4, num_train_epochs=1000, learning_rate=0.01, lr_scheduler_type="linear",
        warmup_steps=0.1, eval_strategy="epoch", save_strategy="epoch", logging_steps=1, seed=0,
        per_device_eval_batch_size=8,
    )
    data = toy_dataset()
    trainer = TranslationTrainer(model=tiny_model(), args=args, train_dataset=data, eval_dataset=data[:8],
                                 data_collator=collate, callbacks=[callback], clock=clock)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback, timer


def logged_learning_rates(trainer) -> dict[int, float]:
    return {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}


def test_trainer_stops_at_the_budget_and_evaluates_every_interval(tmp_path):
    trainer, callback, _ = run_trainer(tmp_path)
    # One second per step: 30 s budget = 30 steps (16 per epoch, so the per-epoch cadence would have been 16, 32).
    assert trainer.state.global_step == 30
    evaluated = [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert evaluated == [10, 20, 30]
    assert [round(seconds) for seconds, _ in callback.curve] == [10, 20, 30]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    # The learning rate logged at step s was set after step s - 1, at s - 1 seconds of the 30-second budget.
    rates = logged_learning_rates(trainer)
    for step in (2, 5, 15, 29):
        assert rates[step] == pytest.approx(0.01 * linear_with_warmup((step - 1) / 30, 0.1), rel=1e-4)


def test_resumed_run_continues_the_clock_and_the_schedule(tmp_path):
    reference, _, _ = run_trainer(tmp_path / "uninterrupted")
    interrupted = tmp_path / "interrupted"
    run_trainer(interrupted, budget_minutes=0.5)
    for later in ("checkpoint-20", "checkpoint-30"):  # as if the run had died after saving checkpoint-10
        for path in sorted((interrupted / later).iterdir()):
            path.unlink()
        (interrupted / later).rmdir()
    scheduler_state = torch.load(interrupted / "checkpoint-10" / "scheduler.pt", weights_only=True)
    assert scheduler_state["elapsed_seconds"] == pytest.approx(10)

    resumed, callback, _ = run_trainer(interrupted, resume=str(interrupted / "checkpoint-10"))
    assert resumed.state.global_step == 30  # 10 s restored + 20 s in the new process
    assert [round(seconds) for seconds, _ in callback.curve] == [20, 30]
    expected, got = logged_learning_rates(reference), logged_learning_rates(resumed)
    for step in range(12, 31):
        assert got[step] == pytest.approx(expected[step], rel=1e-6)
    reference_weights = dict(reference.model.named_parameters())
    for name, parameter in resumed.model.named_parameters():
        torch.testing.assert_close(parameter, reference_weights[name])


def test_train_script_refuses_a_bad_budget_before_any_work(train_script, tmp_path):
    output_dir = tmp_path / "out"
    for flags, message in (
        (["--max_train_minutes", "0"], "--max_train_minutes must be a number of minutes > 0"),
        (["--max_train_minutes", "-1"], "--max_train_minutes must be a number of minutes > 0"),
        (["--warmup_steps", "200"], "fraction of the time budget"),
        (["--eval_every_minutes", "0"], "--eval_every_minutes must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            train_script.main(["--output_dir", str(output_dir), *flags])
        assert not output_dir.exists()


# --------------------------------------------------------------------------------------------------------------------
# Distributed: every process gets rank 0's reading


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_clock_on_rank(rank: int, world_size: int, port: int, result_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        timer = FakeTimer()
        clock = TrainingClock(budget_minutes=1, timer=timer)
        clock.start()
        timer.advance(10.0 + 5 * rank)  # the processes' own clocks disagree
        readings = [clock.update(torch.device("cpu")), clock.read()]
        with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
            json.dump(readings, f)
    finally:
        dist.destroy_process_group()


def test_distributed_processes_agree_on_rank_0s_clock(tmp_path):
    mp.spawn(_read_clock_on_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == [10.0, 10.0]
    assert rank1 == [10.0, 15.0]  # updated to rank 0's reading; its own reading is 15 s

