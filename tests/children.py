"""Test helpers that run in a child process of their own (tests/*_run.py: TensorFlow
settings that are process-wide, such as logical devices and op determinism)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(module, *argv, timeout=300):
    """`python -m module argv` from the repository root: the JSON objects it printed, one a
    line, and its stderr. A failing child fails the test with the end of its stderr."""
    done = subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")], done.stderr
