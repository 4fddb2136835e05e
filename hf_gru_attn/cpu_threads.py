"""Torch's intra-op thread count during CPU training, following the load that other processes put on our cores.

torch splits every op evenly over its threads and waits for the slowest one, so a thread that shares its core with
another busy process holds the whole op back. Measured on this project's 2-core machine (AVX-512, the default recipe's
model, batch 96, bf16 autocast or fp32): a step took 0.29-0.36 s with 2 threads on quiet cores, but 6.6-11 s with 2
threads while another CPU-bound process ran on one core, and 0.53-0.74 s with 1 thread then.
"""

import logging
import math
import os
import time
from collections.abc import Callable

import psutil
import torch
from transformers import TrainerCallback


logger = logging.getLogger(__name__)


def sample_core_usage() -> tuple[float, float, float]:
    """
    Returns `(wall seconds, busy CPU-seconds of the cores this process may run on, CPU-seconds of this process)`,
    cumulative since some fixed start (differences between two samples are what count). Uses `psutil`.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    per_core = psutil.cpu_times(percpu=True)
    if cores is not None and max(cores) < len(per_core):
        per_core = [per_core[core] for core in cores]
    busy = sum(sum(times) - times.idle - getattr(times, "iowait", 0.0) for times in per_core)
    own = psutil.Process().cpu_times()
    return time.monotonic(), busy, own.user + own.system


def usable_core_count() -> int:
    """The number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LoadAwareThreadsCallback(TrainerCallback):
    """
    Every `interval_seconds` of training, measures how many of our cores other processes kept busy since the last
    check (their busy CPU-seconds over the wall-clock seconds) and sets `torch.set_num_threads` to the cores left,
    rounded to the nearest core, at least 1 and at most the thread count at the start of training. On quiet cores the
    count stays where it was; with another CPU-bound process on one of two cores it drops to 1. The last choice stays
    in force after training (for the test-set decoding that follows in `scripts/train.py`).

    Each process of a distributed run decides for itself (threads need no agreement).

    Args:
        interval_seconds (`float`, defaults to 10): seconds between two measurements.
        sampler (`Callable[[], tuple[float, float, float]]`, defaults to [`sample_core_usage`]): returns
            `(wall seconds, busy CPU-seconds of our cores, our CPU-seconds)`; tests pass a fake one.
        cores (`int`, *optional*): the number of cores we may use; default [`usable_core_count`].
    """

    def __init__(
        self,
        interval_seconds: float = 10.0,
        sampler: Callable[[], tuple[float, float, float]] | None = None,
        cores: int | None = None,
    ):
        self.interval_seconds = interval_seconds
        self.sampler = sampler or sample_core_usage
        self.cores = cores or usable_core_count()
        self.max_threads = None
        self.last_sample = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.max_threads = torch.get_num_threads()
        self.last_sample = self.sampler()

    def on_step_end(self, args, state, control, **kwargs):
        sample = self.sampler()
        wall = sample[0] - self.last_sample[0]
        if wall < self.interval_seconds:
            return
        others = max(0.0, (sample[1] - self.last_sample[1]) - (sample[2] - self.last_sample[2])) / wall
        self.last_sample = sample
        threads = max(1, min(self.max_threads, self.cores - math.floor(others + 0.5)))
        if threads != torch.get_num_threads():
            logger.info(f"Other processes keep {others:.1f} of {self.cores} cores busy: {threads} torch threads.")
            torch.set_num_threads(threads)
