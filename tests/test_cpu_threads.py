"""`LoadAwareThreadsCallback`: torch's thread count follows the cores that other processes leave free."""

import pytest
import torch

from hf_gru_attn.cpu_threads import LoadAwareThreadsCallback, sample_core_usage


class FakeUsage:
    """Cumulative (wall, busy CPU-seconds of our cores, our CPU-seconds), advanced by `run`."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0

    def run(self, seconds: float, own_cores: float, other_cores: float):
        self.wall += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds

    def __call__(self):
        return self.wall, self.busy, self.own


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_threads_follow_the_load_of_other_processes(two_threads):
    usage = FakeUsage()
    callback = LoadAwareThreadsCallback(interval_seconds=10, sampler=usage, cores=2)
    callback.on_train_begin(None, None, None)
    usage.run(12, own_cores=2, other_cores=0)  # quiet: we use both cores
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 2
    usage.run(12, own_cores=1, other_cores=1)  # another CPU-bound process on one core
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 1
    usage.run(5, own_cores=1, other_cores=0)  # quiet again, but the interval has not passed: no change yet
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 1
    usage.run(6, own_cores=1, other_cores=0)  # 11 s since the last measurement
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 2
    usage.run(10, own_cores=0.2, other_cores=5)  # more load than cores: still one thread, never zero
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 1


def test_never_more_threads_than_at_the_start(two_threads):
    torch.set_num_threads(1)
    usage = FakeUsage()
    callback = LoadAwareThreadsCallback(interval_seconds=1, sampler=usage, cores=4)
    callback.on_train_begin(None, None, None)
    usage.run(2, own_cores=1, other_cores=0)
    callback.on_step_end(None, None, None)
    assert torch.get_num_threads() == 1


def test_the_real_sampler_sees_this_process_work():
    wall0, busy0, own0 = sample_core_usage()
    total = 0
    while sample_core_usage()[2] - own0 < 0.2 and sample_core_usage()[0] - wall0 < 20:  # work until 0.2 CPU-s
        total += sum(range(1000))
    wall1, busy1, own1 = sample_core_usage()
    assert own1 - own0 >= 0.2  # our CPU-seconds grew with the work
    assert wall1 - wall0 >= (own1 - own0) * 0.9  # one thread: no more CPU-seconds than wall seconds
    assert busy1 - busy0 >= (own1 - own0) * 0.5  # and the cores' busy time includes ours (coarse clock ticks)
