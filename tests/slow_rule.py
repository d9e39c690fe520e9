"""The `slow` marker's one rule, checked on every test as it runs: a test is marked slow
exactly when it, or a fixture it uses,
- trains: runs a training step (legacy_eager.steps.train_step, or airbench_tf's
  Trainer._train_step), in this process or a child;
- starts a server (tests.serving.Server);
- or starts a child process that imports TensorFlow.

What a test did is seen while it runs, where it can be: a training step through a note
added to each step legacy_eager.steps.train_step builds and to airbench_tf's
Trainer._train_step (each module is wrapped as it is first imported; the note runs when the
step runs eagerly or is traced), a server through
Server's count, a child that imports TensorFlow through its memory maps (Linux: a thread
looks at this process's descendants while it has any). A fixture's work counts for every
test that uses it. A test that breaks the rule gets an error at teardown saying which way.
conftest.py calls watch_training() and registers this module as a plugin (not a conftest's
hooks, which would miss the setup of session-scoped fixtures).
"""
import importlib.abc
import importlib.util
import os
import sys
import threading
import time

import pytest

RULE = ("the slow rule: a test is marked slow when it (or a fixture it uses) trains, starts a "
        "server, or starts a child process that imports TensorFlow")
_done = []         # what slow work happened in this process, in order (one phrase each)
_slow_fixtures = {}  # FixtureDef -> the phrases of the work its setup did


def _note(what):
    _done.append(what)  # the same string each time a step runs: a few bytes a step


# ---------------------------------------------------------------- training steps


def _wrap_steps(module):
    build = module.train_step

    def train_step(trainer):
        step = build(trainer)

        def noted(x, y):
            _note("trains (a training step ran)")
            return step(x, y)
        return noted
    module.train_step = train_step


def _wrap_airbench_trainer(module):
    step = module.Trainer._train_step

    def _train_step(self, x, y):
        _note("trains (a training step ran)")
        return step(self, x, y)
    module.Trainer._train_step = _train_step


# The modules whose training steps are watched, and how each is wrapped.
STEP_MODULES = {"legacy_eager.steps": _wrap_steps, "airbench_tf.trainer": _wrap_airbench_trainer}


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps a module of STEP_MODULES when it is first imported (not before: they import
    TensorFlow, which a test run that trains nothing should not pay for)."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            STEP_MODULES[name](module)
        spec.loader.exec_module = exec_module
        return spec


def watch_training():
    for name, wrap in STEP_MODULES.items():
        if name in sys.modules:
            wrap(sys.modules[name])
        else:
            sys.meta_path.insert(0, _WrapOnImport(name))


# ---------------------------------------------------------------- child processes


def _descendants(pid):
    found, stack = set(), [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = {int(p) for p in f.read().split()}
            except OSError:
                continue
            stack.extend(children - found)
            found |= children
    return found


def _stat(pid):
    """(parent pid, start time) of a process, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]
    except (OSError, IndexError, ValueError):
        return None


def _imports_tensorflow(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return "libtensorflow" in maps or "_pywrap_tensorflow" in maps


def _command(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


class _Children(threading.Thread):
    """Looks at this process's descendants every POLL seconds from a new child process on
    until none has been seen for IDLE seconds; notes each that has TensorFlow mapped."""
    POLL, IDLE = 0.2, 2.0

    def __init__(self):
        super().__init__(daemon=True, name="slow-rule-children")
        self.wake = threading.Event()
        self.with_tensorflow = set()

    def run(self):
        me = os.getpid()
        while True:
            self.wake.wait()
            self.wake.clear()
            last_seen = time.monotonic()
            while time.monotonic() - last_seen < self.IDLE or self.wake.is_set():
                self.wake.clear()
                pids = _descendants(me)
                if pids:
                    last_seen = time.monotonic()
                for pid in pids:
                    stat = _stat(pid)
                    if stat is None or (pid, stat[1]) in self.with_tensorflow:
                        continue
                    # Between fork and exec a child is a copy of its parent, TensorFlow and
                    # all: it counts once it runs a command line of its own.
                    command = _command(pid)
                    if command != _command(stat[0]) and _imports_tensorflow(pid):
                        self.with_tensorflow.add((pid, stat[1]))
                        _note(f"starts a child process that imports TensorFlow ({command})")
                time.sleep(self.POLL)


_children = None


def watch_children():
    """In the process that runs the tests, from its first fixture on: a new child process
    wakes the watcher (Linux only)."""
    global _children
    if _children is not None or not os.path.isdir(f"/proc/{os.getpid()}/task"):
        return
    _children = _Children()
    _children.start()

    def audit(event, args):
        if event in ("subprocess.Popen", "os.posix_spawn", "os.system"):
            _children.wake.set()
    sys.addaudithook(audit)


# ---------------------------------------------------------------- servers


def _servers_started():
    from tests.serving import Server

    return Server.started


# ---------------------------------------------------------------- the hooks


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    watch_children()  # from the first fixture on: session-scoped ones are set up first
    start, servers = len(_done), _servers_started()
    try:
        return (yield)
    finally:
        work = _done[start:] + ["starts a server"] * (_servers_started() > servers)
        if work:
            _slow_fixtures[fixturedef] = work


@pytest.fixture(autouse=True)
def _slow_rule(request):
    watch_children()
    start, servers = len(_done), _servers_started()
    yield
    if _children is not None and _children.wake.is_set():
        time.sleep(_Children.POLL * 2)  # a child started at the very end: one more look
    work = _done[start:] + ["starts a server"] * (_servers_started() > servers)
    for name in request.fixturenames:
        for fixturedef in request.node._fixtureinfo.name2fixturedefs.get(name, ())[-1:]:
            work += [f"{w}, in fixture {name!r}" for w in _slow_fixtures.get(fixturedef, ())]
    marked = request.node.get_closest_marker("slow") is not None
    if work and not marked:
        pytest.fail(f"not marked slow, but it {work[0]}; {RULE}", pytrace=False)
    if marked and not work:
        pytest.fail(f"marked slow, but it neither trains, nor starts a server or a child process "
                    f"that imports TensorFlow; {RULE}", pytrace=False)
