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
