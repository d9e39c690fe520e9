"""Replacing an export folder survives a crash at every step of the swap: the target (or,
after the next start's recovery, the previous copy) is always there and whole."""
import os
import subprocess
import sys

import pytest

from legacy_eager import atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASH = """
import os, sys
from legacy_eager import atomic
target, step = sys.argv[1], sys.argv[2]
def crash(at):
    if at == step:
        os._exit(9)  # no cleanup of any kind, as in a power cut
atomic._between = crash
with atomic.staged_path(target, is_dir=True) as staged:
    with open(os.path.join(staged, "model.pb"), "w") as f:
        f.write("new")
"""


def _export(folder, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.pb"), "w") as f:
        f.write(text)


def _content(folder):
    return open(os.path.join(folder, "model.pb")).read()


@pytest.mark.parametrize("step,after_crash", [
    ("staged", "old"), ("previous moved aside", None), ("new in place", "new")])
def test_crash_at_every_step_of_the_swap(tmp_path, step, after_crash):
    target = str(tmp_path / "saved_model")
    _export(target, "old")
    done = subprocess.run([sys.executable, "-c", CRASH, target, step], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert done.returncode == 9  # it really crashed there
    if after_crash is None:
        assert not os.path.exists(target)  # the one moment without it...
    else:
        assert _content(target) == after_crash
    atomic.recover(target)  # ...which the next start undoes
    assert _content(target) == (after_crash or "old")
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]  # no scratch, no stale copy
    with atomic.staged_path(target, is_dir=True) as staged:  # and the next export works
        _export(staged, "newer")
    assert _content(target) == "newer" and sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_an_export_starts_by_recovering(tmp_path):
    target = str(tmp_path / "saved_model")
    _export(target, "old")
    subprocess.run([sys.executable, "-c", CRASH, target, "previous moved aside"], cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)

    class Failed(Exception):
        pass
    with pytest.raises(Failed):
        with atomic.staged_path(target, is_dir=True):
            assert _content(target) == "old"  # back before the new export even starts
            raise Failed
    assert _content(target) == "old" and sorted(os.listdir(tmp_path)) == ["saved_model"]


RACE = """
import sys, time
from legacy_eager import atomic
path, me, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # all of them at once
print(atomic.create_exclusive(path, me * 1000))
"""


def test_of_processes_creating_one_file_at_once_exactly_one_does_and_it_is_whole(tmp_path):
    import time

    path = str(tmp_path / "run-0.claim")
    start = time.time() + 2
    procs = [subprocess.Popen([sys.executable, "-c", RACE, path, str(i), str(start)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                              text=True) for i in range(6)]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["False"] * 5 + ["True"]
    winner = str(results.index("True"))
    assert open(path).read() == winner * 1000
    assert os.listdir(tmp_path) == ["run-0.claim"]  # no scratch file left behind


def test_create_exclusive_leaves_an_existing_file_alone(tmp_path):
    path = tmp_path / "sweep.json"
    assert atomic.create_exclusive(str(path), "first")
    assert not atomic.create_exclusive(str(path), "second")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["sweep.json"]


def test_a_link_that_answers_eexist_after_linking_still_counts(tmp_path, monkeypatch):
    """NFS: a retransmitted LINK request finds the name its first transmission made."""
    real_link = os.link

    def link_then_eexist(src, dst):
        real_link(src, dst)
        raise FileExistsError(17, "File exists")
    monkeypatch.setattr(os, "link", link_then_eexist)
    path = tmp_path / "run-0.claim"
    assert atomic.create_exclusive(str(path), "mine")
    assert path.read_text() == "mine"


def test_without_hard_links_the_file_is_created_exclusively(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "run-0.claim"
    assert atomic.create_exclusive(str(path), "mine")
    assert not atomic.create_exclusive(str(path), "theirs")
    assert path.read_text() == "mine" and os.listdir(tmp_path) == ["run-0.claim"]
