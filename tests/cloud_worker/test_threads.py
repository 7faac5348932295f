"""``thread_plan``: how ``runtime.instances`` / ``intra_op_threads`` share the CPUs; ``use_threads``."""

from __future__ import annotations

import threading as python_threads

import pytest
import torch

from cloud_worker import threads
from cloud_worker.threads import ThreadPlan, thread_plan, use_threads



@pytest.fixture
def cpus(monkeypatch):
    def set_cpus(count: int) -> None:
        monkeypatch.setattr(threads, "available_cpus", lambda: count)
    return set_cpus


@pytest.mark.parametrize("instances, intra_op, count, plan", [
    (1, None, 8, ThreadPlan(1, 8, 8)),
    (2, None, 8, ThreadPlan(2, 4, 4)),
    (3, None, 2, ThreadPlan(3, 1, 1)),
    (2, 3, 8, ThreadPlan(2, 3, 3)),
    ("auto", None, 2, ThreadPlan(2, 2, 1)),
    ("auto", None, 16, ThreadPlan(2, 16, 8)),
    ("auto", 4, 16, ThreadPlan(2, 4, 2)),
    ("auto", None, 1, ThreadPlan(1, 1, 1)),  # nothing to split
    ("auto", 1, 16, ThreadPlan(1, 1, 1)),
])
def test_plans_on_a_cpu(cpus, instances, intra_op, count, plan):
    cpus(count)
    got = thread_plan(instances, intra_op, "cpu")
    assert got == plan and got.splits == (plan.narrow != plan.wide)


def test_auto_on_a_gpu_is_one_instance(cpus):
    cpus(16)
    assert thread_plan("auto", None, "cuda") == ThreadPlan(1, 16, 16)


def test_use_threads_sets_the_calling_thread_s_own_count():
    seen = {}

    def run(name: str, count: int) -> None:
        use_threads(count)
        torch.ones(4).sum()  # an operator: torch's own first-use set-up of the thread has run
        seen[name] = torch.get_num_threads()

    for name, count in (("one", 1), ("two", 2)):
        thread = python_threads.Thread(target=run, args=(name, count))
        thread.start()
        thread.join()
    assert seen == {"one": 1, "two": 2}


def test_a_plan_says_how_batches_share_the_cpus():
    assert str(ThreadPlan(2, 2, 1)) == "2 torch threads for a batch alone, 1 each for two at once"
    assert str(ThreadPlan(1, 4, 4)) == "one batch at a time on 4 torch threads"
    assert str(ThreadPlan(2, 1, 1)) == "2 batches at a time on 1 torch thread each"
