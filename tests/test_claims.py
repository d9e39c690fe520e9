"""export.claims: one process per run of a sweep, on one machine or several sharing the
folder. Races are run as real processes started at the same instant."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from export import claims

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACQUIRE = """
import sys, time
from export import claims
path, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # all of them at once
got = claims.acquire(path, log=lambda line: None)
print("claimed" if isinstance(got, claims.Claim) else "held", flush=True)
sys.stdin.read()  # alive until all have tried: a dead holder's claim is stale on its machine
"""


def _race(path, n=5):
    start = time.time() + 2
    procs = [subprocess.Popen([sys.executable, "-c", ACQUIRE, path, str(start)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    results = sorted(p.stdout.readline().strip() for p in procs)
    for p in procs:
        p.communicate(timeout=60)
    return results


def _foreign_claim(path, age_s, **fields):
    """A claim made by a process on another machine, its heartbeat `age_s` seconds old."""
    info = dict({"host": "node-7", "pid": 4242, "child_pid": 4243, "machine": "node-7/boot/pid:[1]",
                 "token": "theirs"}, **fields)
    with open(path, "w") as f:
        json.dump(info, f)
    then = time.time() - age_s
    os.utime(path, (then, then))


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("before", ["nothing", "a stale claim"])
def test_of_processes_claiming_one_run_at_once_exactly_one_gets_it(tmp_path, before):
    path = str(tmp_path / "run-0.claim")
    if before == "a stale claim":
        _foreign_claim(path, age_s=3600)
    assert _race(path) == ["claimed"] + ["held"] * 4
    holder = claims.read_claim(path)
    assert holder.token != "theirs" and holder.host and holder.pid
    assert os.listdir(tmp_path) == ["run-0.claim"]  # no scratch, no moved-aside claim left


def test_a_live_claim_is_held_and_says_by_whom(tmp_path):
    path = str(tmp_path / "run-0.claim")
    mine = claims.acquire(path)
    assert isinstance(mine, claims.Claim)
    other = claims.acquire(path)  # this very process is alive: no takeover
    assert isinstance(other, claims.Holder) and other.pid == os.getpid()
    assert other.describe(600).startswith(f"claimed by {other.host} pid {os.getpid()}, heartbeat ")
    mine.release()
    assert not os.path.exists(path)


def test_a_heartbeat_older_than_the_limit_is_stale_and_taken_over(tmp_path):
    path = str(tmp_path / "run-0.claim")
    _foreign_claim(path, age_s=590)
    held = claims.acquire(path, stale_after=600)
    assert isinstance(held, claims.Holder) and held.token == "theirs"
    assert held.describe(600).startswith("claimed by node-7 pid 4242, heartbeat 59")
    _foreign_claim(path, age_s=610)
    lines = []
    got = claims.acquire(path, stale_after=600, log=lines.append)
    assert isinstance(got, claims.Claim) and claims.read_claim(path).token == got.info["token"]
    assert lines == [f"{path}: took over the stale claim of node-7 pid 4242 (heartbeat 610 s ago, "
                     "over the 600 s limit)"]
    assert os.listdir(tmp_path) == ["run-0.claim"]


def test_a_claim_made_on_this_machine_by_processes_now_gone_is_stale_at_once(tmp_path):
    path = str(tmp_path / "run-0.claim")
    here = claims.machine_id()
    _foreign_claim(path, age_s=0, machine=here, pid=_dead_pid(), child_pid=os.getpid())
    assert isinstance(claims.acquire(path), claims.Holder)  # its training child still runs
    _foreign_claim(path, age_s=0, machine=here, pid=_dead_pid(), child_pid=_dead_pid())
    assert isinstance(claims.acquire(path), claims.Claim)
    # The same pids on another machine mean nothing here: only the heartbeat's age counts.
    _foreign_claim(path, age_s=0, pid=_dead_pid(), child_pid=None)
    assert isinstance(claims.acquire(path), claims.Holder)


def test_a_zombie_is_not_running():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while claims.running(proc.pid) and time.time() < deadline:
        time.sleep(0.05)  # exited, not reaped: /proc says Z
    assert not claims.running(proc.pid)
    proc.wait()
    assert claims.running(os.getpid()) and not claims.running(None)


def test_a_taker_that_moved_a_fresh_claim_puts_it_back_whole(tmp_path):
    """Two takers judged one stale claim; the first replaced it with its own before the
    second's rename, which therefore moved a fresh claim: it goes back, the same file."""
    path = str(tmp_path / "run-0.claim")
    _foreign_claim(path, age_s=3600)
    judged = claims.read_claim(path)
    fresh = claims.acquire(path, log=lambda line: None)  # the first taker
    inode = os.stat(path).st_ino
    assert not claims._put_aside(path, judged, 600)  # the second taker
    assert os.stat(path).st_ino == inode and fresh.holds()
    assert os.listdir(tmp_path) == ["run-0.claim"]


def test_the_heartbeat_touches_the_claim_and_stops_the_run_when_it_is_taken_over(tmp_path):
    path = str(tmp_path / "run-0.claim")
    claim = claims.acquire(path)
    old = time.time() - 300
    os.utime(path, (old, old))
    lost = []
    with claims.Heartbeat(claim, every=0.05, give_up=60, lost=lost.append):
        deadline = time.time() + 10
        while os.stat(path).st_mtime < time.time() - 60 and time.time() < deadline:
            time.sleep(0.05)
        assert claims.read_claim(path).age() < 60 and lost == []
        _foreign_claim(path, age_s=0)  # another process took it over
        while not lost and time.time() < deadline:
            time.sleep(0.05)
    assert lost == ["its claim was taken over by another process"]
    assert claims.read_claim(path).token == "theirs"
    claim.release()  # not ours any more: left alone
    assert claims.read_claim(path).token == "theirs"


def test_a_heartbeat_that_cannot_be_written_for_half_the_limit_stops_the_run(tmp_path):
    claim = claims.acquire(str(tmp_path / "run-0.claim"))
    now = [0.0]

    def refresh():
        now[0] += 10  # each failed attempt: 10 s of a lost mount
        raise OSError(5, "Input/output error")
    claim.refresh = refresh
    lost, done = [], threading.Event()
    with claims.Heartbeat(claim, every=0.01, give_up=35, lost=lambda r: (lost.append(r), done.set()),
                          clock=lambda: now[0]):
        done.wait(10)
    assert lost == ["its claim could not be refreshed for 35 s (Input/output error)"]
    assert now[0] == 40  # not before the limit, and once
