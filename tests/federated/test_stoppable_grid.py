"""StoppableGrid polls a grid at most every POLL_S seconds, and stops when asked."""

import threading
from types import SimpleNamespace

import pytest

from fedicd.federated.outcome import RunInterruptedError
from fedicd.federated.runtime import POLL_S, RunControl, StoppableGrid


class SlowGrid:
    """Replies to every message after ``ready_after`` pulls; records what it was asked."""

    def __init__(self, ready_after: int, pull_interval: float | None) -> None:
        self.ready_after, self.pulls = ready_after, 0
        if pull_interval is not None:
            self.pull_interval = pull_interval

    def push_messages(self, messages):
        return [m for m in messages]

    def pull_messages(self, ids):
        self.pulls += 1
        if self.pulls < self.ready_after:
            return []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids]


@pytest.mark.parametrize("interval, expected", [(None, POLL_S), (0.1, POLL_S), (0.005, 0.005)])
def test_waits_between_pulls_are_the_shorter_of_the_grids_interval_and_poll_s(interval, expected):
    control = RunControl()
    waits = []
    control.stop = SimpleNamespace(is_set=lambda: False, wait=waits.append)
    grid = SlowGrid(ready_after=4, pull_interval=interval)
    replies = StoppableGrid(grid, control).send_and_receive(["a", "b"], timeout=60)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    assert grid.pulls == 4 and waits == [expected] * 3


def test_a_stop_request_ends_the_exchange_at_the_next_pull():
    control = RunControl()
    grid = SlowGrid(ready_after=10**9, pull_interval=None)
    threading.Timer(0.05, control.stop.set).start()
    with pytest.raises(RunInterruptedError, match="the driver stopped the run"):
        StoppableGrid(grid, control).send_and_receive(["a"], timeout=60)
    assert grid.pulls >= 1
