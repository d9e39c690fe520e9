"""Every command line follows one convention (legacy_eager/cli.py): a flag it does not know
or a file that is not there gives one line on stderr, `error: ...` naming it, and exit 2;
no usage dump, no traceback. Each runs as users run it, `python -m ...`."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/davidnet-input"

# entry point -> the arguments it needs besides the one under test
ENTRY_POINTS = {
    "legacy_eager.train": [],
    "export.train_and_export": [],
    "export.repro": ["--runs", "1", "--out", "{tmp}/repro"],
    "export.savedmodel": ["--run", "{tmp}"],
    "export.onnx": ["--run", "{tmp}"],
    "export.predict": ["{tmp}/m.onnx", "{tmp}/x.png"],
    "export.serve": ["{tmp}/m.onnx"],
    "export.publish": ["{tmp}/run", "{tmp}/models"],
    "export.model_repository": ["{tmp}/run", "{tmp}/repo"],
    "bench": [],
    "bench serve": [],
    "bench.step_variants": [],
    "bench.grpc_clients": ["--port", "1", "--clients", "1", "--requests", "1"],
}
# entry point -> the arguments that name a file that is not there
MISSING_FILE = {
    "legacy_eager.train": ["--data", MISSING],
    "export.train_and_export": ["--data", MISSING],
    "export.repro": ["--runs", "1", "--out", "{tmp}/repro", "--data", MISSING],
    "export.savedmodel": ["--run", MISSING],
    "export.onnx": ["--run", MISSING],
    "export.predict": [MISSING, "{tmp}/x.png"],
    "export.serve": [MISSING],
    "export.publish": [MISSING, "{tmp}/models"],
    "export.model_repository": [MISSING, "{tmp}/repo"],
}


def _run(entry, argv, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    module = entry.split()
    done = subprocess.run([sys.executable, "-m", *module, *argv], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, lines


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_unknown_flag_is_one_line_and_exit_2(entry, tmp_path):
    code, lines = _run(entry, ENTRY_POINTS[entry] + ["--bogus-flag"], tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "--bogus-flag" in lines[0], lines[0]


@pytest.mark.parametrize("entry", sorted(MISSING_FILE))
def test_a_missing_file_is_one_line_naming_it_and_exit_2(entry, tmp_path):
    code, lines = _run(entry, MISSING_FILE[entry], tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and MISSING in lines[0], lines[0]


def test_an_unexpected_error_is_one_line_unless_the_traceback_is_asked_for(capsys, monkeypatch):
    from legacy_eager.errors import TRACEBACK_VARIABLE, run_cli

    def broken():
        raise KeyError("width")
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    assert run_cli(broken) == 1
    assert capsys.readouterr().err == ("error: unexpected KeyError: 'width' "
                                       f"(set {TRACEBACK_VARIABLE}=1 for the traceback)\n")
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(KeyError):
        run_cli(broken)


# Every command-line module: its parser() is the whole command line's (docs/*.md's commands
# are checked against it by test_docs.py).
PARSERS = {"legacy_eager.train": "python -m legacy_eager.train",
           "export.train_and_export": "python -m export.train_and_export",
           "export.repro": "python -m export.repro",
           "export.savedmodel": "python -m export.savedmodel",
           "export.onnx": "python -m export.onnx",
           "export.predict": "python -m export.predict",
           "export.serve": "python -m export.serve",
           "export.publish": "python -m export.publish",
           "export.model_repository": "python -m export.model_repository",
           "bench.__main__": "python -m bench",
           "bench.serve": "python -m bench serve",
           "bench.step_variants": "python -m bench.step_variants",
           "bench.grpc_clients": "python -m bench.grpc_clients"}


def test_every_parser_builds_without_tensorflow_or_side_effects(tmp_path):
    """In a fresh process, in an empty folder: each module imports and builds its parser
    (help text included) without loading TensorFlow, setting a variable or writing a file."""
    probe = (
        "import importlib, json, os, sys\n"
        "from legacy_eager.cli import Parser\n"
        "before = dict(os.environ)\n"
        "progs = {}\n"
        f"for name in {sorted(PARSERS)!r}:\n"
        "    p = importlib.import_module(name).parser()\n"
        "    assert isinstance(p, Parser), name\n"
        "    p.format_help()\n"
        "    progs[name] = p.prog\n"
        "print(json.dumps({'progs': progs, 'tensorflow': 'tensorflow' in sys.modules,\n"
        "                  'environ': sorted(set(os.environ.items()) ^ set(before.items())),\n"
        "                  'files': os.listdir('.')}))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                          env=dict(env, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    seen = json.loads(done.stdout)
    assert seen == {"progs": PARSERS, "tensorflow": False, "environ": [], "files": []}


class _ParserSeen(Exception):
    pass


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_main_parses_with_the_modules_parser(name, monkeypatch, capsys):
    """main() reads its command line with the module's own parser() (replaced here by one
    that answers every command line with a usage error), so what parser() accepts is what
    the command accepts."""
    import importlib

    from legacy_eager.errors import UsageError

    class Refusing:
        def parse_args(self, *args, **kwargs):
            raise UsageError("read by parser()")
        parse_known_args = parse_args

    module = importlib.import_module(name)
    monkeypatch.setattr(module, "parser", lambda *args, **kwargs: Refusing())
    assert module.main(["--runs", "1", "--out", "x", "--run", "x", "model", "base"]) == 2
    assert capsys.readouterr().err == "error: read by parser()\n"


def test_a_cause_is_the_exceptions_type_and_first_line():
    from legacy_eager.errors import cause

    assert cause(OSError("disk full\nsecond line")) == "OSError: disk full"
    assert cause(KeyError()) == "KeyError"
    assert cause(ValueError("x" * 400), limit=10) == "ValueError: xxxxxxxxxx"
