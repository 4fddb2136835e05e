"""Training to a wall-clock budget: the clock, a learning-rate schedule driven by elapsed time instead of the step
count, and the callback that records the learning curve, evaluates every few minutes and stops at the budget.

A step-count schedule cut short by a time limit never reaches its low-learning-rate end on a busy machine, so its
result depends on the load. Here the schedule's position is `elapsed / budget`: a slower machine takes fewer steps but
still warms up over the same fraction of the time and decays to the end of the schedule when the budget is spent.
"""

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import distributed as dist
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback, get_scheduler


logger = logging.getLogger(__name__)


class TrainingClock:
    """
    Elapsed training time in seconds, kept across a resume and agreed on by all processes of a distributed run.

    `update()` reads the timer (rank 0's reading is broadcast to every process, so that all of them compute the same
    learning rate and take the same stop and evaluation decisions); `elapsed()` returns the last update, so every
    reader within a step sees the same value. The elapsed time of an interrupted run is restored with `resume()` (the
    [`TimeBudgetLRScheduler`] stores it in the checkpoint's `scheduler.pt`).

    Args:
        budget_minutes (`float`, *optional*): the training budget in minutes; `None` for no budget.
        timer (`Callable[[], float]`, defaults to `time.perf_counter`): a monotonic clock in seconds (tests pass a
            fake one).

    Raises:
        ValueError: if `budget_minutes` is not a finite number > 0.
    """

    def __init__(self, budget_minutes: float | None = None, timer: Callable[[], float] = time.perf_counter):
        if budget_minutes is not None and not (math.isfinite(budget_minutes) and budget_minutes > 0):
            raise ValueError(f"--max_train_minutes must be a number of minutes > 0, got {budget_minutes}.")
        self.budget_seconds = None if budget_minutes is None else 60.0 * budget_minutes
        self.timer = timer
        self.offset = 0.0  # seconds trained before this process started (a resumed run)
        self.started_at = None
        self._elapsed = 0.0

    def start(self):
        """Starts (or restarts, after `resume`) the timer of this process."""
        self.started_at = self.timer()

    def resume(self, elapsed_seconds: float):
        """Sets the time already trained by an interrupted run; call before `start()`."""
        self.offset = self._elapsed = float(elapsed_seconds)

    def read(self) -> float:
        """This process's own reading, in seconds (no synchronisation)."""
        return self.offset if self.started_at is None else self.offset + self.timer() - self.started_at

    def update(self, device: torch.device | None = None) -> float:
        """Reads the timer; in a distributed run every process gets rank 0's reading. Returns the elapsed seconds."""
        elapsed = self.read()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            reading = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.broadcast(reading, src=0)
            elapsed = reading.item()
        self._elapsed = elapsed
        return elapsed

    def elapsed(self) -> float:
        """Seconds trained at the last `update()`."""
        return self._elapsed

    def progress(self) -> float:
        """`elapsed / budget`, clipped to [0, 1]; 0 without a budget."""
        if self.budget_seconds is None:
            return 0.0
        return min(1.0, self._elapsed / self.budget_seconds)


def check_warmup_fraction(warmup_fraction: float):
    """
    Raises `ValueError` unless `warmup_fraction` (`--warmup_steps` under `--max_train_minutes`) is in [0, 1): with a
    time budget the warmup is a share of the budget, as the step count is not known in advance.
    """
    if not 0 <= warmup_fraction < 1:
        raise ValueError(
            f"With --max_train_minutes, --warmup_steps is the fraction of the time budget spent warming up and "
            f"must be in [0, 1), got {warmup_fraction} (steps cannot be known in advance; e.g. pass 0.05)."
        )


class TimeBudgetLRScheduler(LambdaLR):
    """
    A transformers learning-rate schedule (`get_scheduler`: linear, cosine, inverse_sqrt, ... with linear warmup)
    whose position is the fraction of the time budget spent, `clock.progress()`, instead of `step / max_steps`.

    The schedule is evaluated on a grid of `HORIZON` positions over the budget, so warmup covers `warmup_fraction` of
    the budget and the decay ends when the budget is spent, whatever the step rate. `state_dict()` carries the clock's
    elapsed seconds, which `load_state_dict()` restores: a resumed run continues the schedule where it stopped.

    Args:
        optimizer (`torch.optim.Optimizer`): the optimizer whose learning rates are set.
        clock ([`TrainingClock`]): the clock with a budget.
        lr_scheduler_type (`str`): a transformers `SchedulerType` name (`--lr_scheduler_type`).
        warmup_fraction (`float`): the share of the budget spent warming up, in [0, 1).
        scheduler_specific_kwargs (`dict`, *optional*): extra arguments of the schedule (`--lr_scheduler_kwargs`).

    Raises:
        ValueError: if the clock has no budget or `warmup_fraction` is not in [0, 1).
    """

    HORIZON = 1_000_000

    def __init__(self, optimizer, clock: TrainingClock, lr_scheduler_type: str, warmup_fraction: float,
                 scheduler_specific_kwargs: dict | None = None):
        if clock.budget_seconds is None:
            raise ValueError("TimeBudgetLRScheduler needs a clock with a budget (--max_train_minutes).")
        check_warmup_fraction(warmup_fraction)
        self.clock = clock
        # The schedule's multipliers, taken from transformers on a stand-in optimizer, so the real one is untouched.
        stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = get_scheduler(
            lr_scheduler_type, stand_in, num_warmup_steps=round(warmup_fraction * self.HORIZON),
            num_training_steps=self.HORIZON, scheduler_specific_kwargs=scheduler_specific_kwargs,
        )
        super().__init__(optimizer, schedule.lr_lambdas * len(optimizer.param_groups))

    def get_lr(self) -> list[float]:
        position = round(self.clock.progress() * self.HORIZON)
        return [base_lr * multiplier(position) for base_lr, multiplier in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self) -> dict:
        state = {key: value for key, value in super().state_dict().items() if key != "clock"}
        state["elapsed_seconds"] = self.clock.elapsed()
        return state

    def load_state_dict(self, state_dict: dict):
        state_dict = dict(state_dict)
        self.clock.resume(state_dict.pop("elapsed_seconds", 0.0))
        super().load_state_dict(state_dict)


class WallClockCallback(TrainerCallback):
    """
    Drives a run by its [`TrainingClock`]: updates it after every optimizer step (before the scheduler reads it),
    records `(elapsed seconds, eval metrics)` with every evaluation for the learning curve, evaluates and saves every
    `eval_every_minutes` (replacing the cadence of `--eval_strategy`/`--save_strategy`, which must still be set for
    early stopping and best-model selection) and, once the budget is spent, evaluates, saves and stops.

    Args:
        clock ([`TrainingClock`]): the run's clock.
        eval_every_minutes (`float`, *optional*): evaluation and checkpoint interval in training minutes.

    Raises:
        ValueError: if `eval_every_minutes` is given and not > 0.
    """

    def __init__(self, clock: TrainingClock, eval_every_minutes: float | None = None):
        if eval_every_minutes is not None and not eval_every_minutes > 0:
            raise ValueError(f"--eval_every_minutes must be > 0, got {eval_every_minutes}.")
        self.clock = clock
        self.interval = None if eval_every_minutes is None else 60.0 * eval_every_minutes
        self.next_evaluation = None
        self.last_evaluated_step = None
        self.curve = []  # (elapsed seconds, eval metrics)

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.start()
        if self.interval is not None:
            self.next_evaluation = (math.floor(self.clock.elapsed() / self.interval) + 1) * self.interval

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.clock.update(args.device)

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = self.clock.elapsed()
        if self.interval is not None:
            due = elapsed >= self.next_evaluation or state.global_step >= state.max_steps
            control.should_evaluate = control.should_save = due
            if due:
                self.next_evaluation = (math.floor(elapsed / self.interval) + 1) * self.interval
        budget = self.clock.budget_seconds
        if budget is not None and elapsed >= budget:
            logger.warning(f"The training budget of {budget / 60:g} minutes is spent: stopping training.")
            control.should_training_stop = control.should_evaluate = control.should_save = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # The time cadence replaces the per-epoch one; and a step evaluated at the budget is not evaluated twice.
        if self.interval is not None or state.global_step == self.last_evaluated_step:
            control.should_evaluate = control.should_save = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.last_evaluated_step = state.global_step
        self.curve.append((self.clock.elapsed(), dict(metrics or {})))
