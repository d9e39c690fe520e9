"""The docs are tested: links and anchors resolve, commands parse, flags tables match the
parsers. check_docs(root) reads root's *.md and docs/**/*.md and returns every failure as
`FILE:LINE: what: why`; the tests run it on the repository and on a planted tree.

Links. Every [text](target) and ![alt](target) outside code, and every reference definition
`[name]: target`. Targets with a scheme (https:, mailto:) are not fetched. Any other must be
a file or folder that exists, relative to the page (or, starting with /, to the repository),
inside the repository. An #anchor (alone: the page itself) must be the GitHub slug of a
`#` heading of the target .md page: the heading's text without its markup, lowercased, every
character but letters, digits, spaces, hyphens and underscores dropped, each space a hyphen;
the second heading with the same slug gets -1, the third -2. `<a name="x">`/`id="x"` count
too. Anchors into other files (#L10 of a .py) are not checked.

Commands. In ```bash, ```sh, ```shell and ```zsh blocks every line is a command line; in
any other fenced block only the lines that start with `$ ` (the prompt is dropped). A line
ending in \\ goes on on the next. The line is split as the shell would quote it (shlex; `#`
starts a comment), cut into commands at |, ||, &&, ; and &, and each command ends at a
redirection (>, >>, <, 2>&1 ...). Leading VAR=value assignments (and `env`, `exec`) are
dropped. A command is checked when it is
  ./run.sh ARGS        export.train_and_export's parser (the training flags);
                       ./run.sh bench|repro|serve ARGS: bench's, export.repro's, export.serve's;
                       ./run.sh --print-install; ./run.sh test [--fast] [PYTEST ARGS], whose
                       tests/... files must exist (the rest is pytest's);
  [PATH/]python[3[.N]] -m MODULE ARGS    for a MODULE of this project's packages: its parser()
                       (a package's: its __main__'s), subcommands included (bench serve);
  a console script of pyproject's [project.scripts] (davidnet-serve ...): its module's parser().
Other commands (curl, pip, docker, python -m pytest) are not checked.
A synopsis line is one with a placeholder: a word containing [, ], ..., $ or <name>, or a
word with a part (split at / = , :) in capitals: a capital letter, then capitals, digits or
underscores, then optionally .ext (DIR, RUN_DIR, N, MODEL.onnx, FILE.png; so README.md
counts as one too). A synopsis is not parsed, but every --flag in it must be one of the
command's. Any other command is parsed with parser().parse_args, which runs nothing: an
unknown flag, a value out of range or not among the choices, a missing required argument
fails; paths need not exist (they are opened only after parsing). --help passes.

Flags tables. A table is checked against a parser when the line before it (blank lines
aside) is `<!-- flags: COMMAND -->`, COMMAND being a module as after `python -m` and its
subcommand if any: `<!-- flags: legacy_eager.train -->`, `<!-- flags: export.serve -->`,
`<!-- flags: bench serve -->`. Its header row is `| flag | default | meaning |`. The first
cell of a row names its flags in backticks (`--epochs`, `--train-subset N`, `--test-subset
N`); a row naming none (a positional argument) is free. The flags must be exactly the
parser's (-h aside). A default that is a number, a `word` or off must equal the parser's
(off: a switch that is off); any other default (prose, empty) is for people.
"""
import argparse
import contextlib
import glob
import importlib
import io
import os
import re
import shlex
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's packages, whose modules `python -m` lines and flags tables may name.
PACKAGES = sorted(d for d in os.listdir(ROOT) if d != "tests"
                  and os.path.isfile(os.path.join(ROOT, d, "__init__.py")))
RUN_SH = {"bench": "bench", "repro": "export.repro", "serve": "export.serve"}
SHELL_BLOCKS = {"bash", "sh", "shell", "zsh"}
CONTROL = {"|", "||", "&&", ";", "&"}
FLAGS_HEADER = ["flag", "default", "meaning"]


def pages(root):
    """root's *.md (README.md, CHANGELOG.md ...), then docs/**/*.md."""
    return (sorted(glob.glob(os.path.join(root, "*.md")))
            + sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True)))


def split_page(path):
    """(prose: [(line number, text)], code blocks: [(language, [(line number, text)])])."""
    prose, blocks, fence = [], [], None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f.read().splitlines(), 1):
            opening = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
            if fence is None and opening:
                fence = opening.group(1)
                blocks.append((opening.group(2).lower(), []))
            elif fence is not None and re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", line):
                fence = None
            elif fence is not None:
                blocks[-1][1].append((number, line))
            else:
                prose.append((number, line))
    return prose, blocks


# Links and anchors

def without_code_spans(line):
    return re.sub(r"(`+)(.+?)\1", "code", line)


def slug(heading):
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    prose, _ = split_page(path)
    seen, found = {}, set()
    for _, line in prose:
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(re.findall(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", line))
    return found


def links(prose):
    for number, line in prose:
        definition = re.match(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", line)
        if definition:
            yield number, definition.group(1)
            continue
        for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)",
                                 without_code_spans(line)):
            yield number, target


def check_link(root, page, target):
    """None, or why the link does not resolve."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
        return None  # https:, mailto: ...: not fetched
    path, _, anchor = target.partition("#")
    path = urllib.parse.unquote(path.split("?")[0])
    if not path:
        resolved = page
    elif path.startswith("/"):
        resolved = os.path.abspath(os.path.join(root, path.lstrip("/")))
    else:
        resolved = os.path.abspath(os.path.join(os.path.dirname(page), path))
    if os.path.commonpath([resolved, os.path.abspath(root)]) != os.path.abspath(root):
        return "points outside the repository"
    if not os.path.exists(resolved):
        return "no such file or folder"
    if anchor and resolved.endswith(".md") and os.path.isfile(resolved):
        if urllib.parse.unquote(anchor).lower() not in anchors(resolved):
            return f"no heading with the anchor #{anchor} in {os.path.relpath(resolved, root)}"
    return None


# Commands

def command_lines(blocks):
    """(line number, text) of every command line of the page's code blocks, continuations
    joined, prompts dropped."""
    for language, lines in blocks:
        start, text = None, ""
        for number, line in lines:
            if start is None:
                if language not in SHELL_BLOCKS and not line.startswith("$ "):
                    continue
                start, line = number, line[2:] if line.startswith("$ ") else line
            if line.rstrip().endswith("\\"):
                text += line.rstrip()[:-1] + " "
                continue
            yield start, text + line
            start, text = None, ""
        if start is not None:
            yield start, text


def is_placeholder(word):
    if any(mark in word for mark in ("[", "]", "...", "$")):
        return True
    if re.search(r"<[A-Za-z]|[A-Za-z]>$", word):  # <name>, which the shell splits at spaces
        return True
    return any(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Za-z0-9]+)*", part)
               for part in re.split(r"[/=,:]", word))


def commands(words):
    """The words of each command of a split line."""
    command, redirected = [], False
    for word in words + [";"]:
        if word in CONTROL or word.endswith(";"):
            if word.endswith(";") and word != ";" and not redirected:
                command.append(word[:-1])
            if command:
                yield command
            command, redirected = [], False
        elif not redirected and not is_placeholder(word) and re.match(r"^\d*(>>?|<|>&|&>)", word):
            redirected = True
        elif not redirected:
            command.append(word)


def console_scripts():
    """pyproject's [project.scripts], name: module (read by hand: tomllib is Python 3.11+)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        section = f.read().split("\n[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):', section, re.M))


def what_runs(words):
    """(module, its arguments) that a command runs, ("test", arguments), or None when it is
    not one of this project's commands."""
    while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0] in ("env", "exec")):
        words = words[1:]
    if not words:
        return None
    program, args = words[0], words[1:]
    if program == "./run.sh" or program.endswith("/run.sh"):
        if args[:1] == ["test"]:
            return "test", args[1:]
        if args[:1] == ["--print-install"]:
            return "--print-install", []
        if args[:1] and args[0] in RUN_SH:
            return RUN_SH[args[0]], args[1:]
        return "export.train_and_export", args
    if re.fullmatch(r"python(\d+(\.\d+)*)?", os.path.basename(program)) and args[:1] == ["-m"]:
        if len(args) > 1 and args[1].split(".")[0] in PACKAGES:
            return args[1], args[2:]
        return None
    scripts = console_scripts()
    if os.path.basename(program) in scripts:
        return scripts[os.path.basename(program)], args
    return None


def parser_of(command):
    """The parser of `module [subcommand...]`, or raise LookupError saying why not."""
    module, *subcommands = command.split()
    try:
        loaded = importlib.import_module(module)
        if not hasattr(loaded, "parser") and hasattr(loaded, "__path__"):
            loaded = importlib.import_module(module + ".__main__")
    except ImportError as e:
        raise LookupError(f"no module {module} ({e})") from None
    if not hasattr(loaded, "parser"):
        raise LookupError(f"{module} has no parser()")
    p = loaded.parser()
    for name in subcommands:
        choices = [a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not choices or name not in choices[0]:
            raise LookupError(f"{module} has no subcommand {name}")
        p = choices[0][name]
    return p


def option_strings(p):
    """Every --flag of p and of its subcommands."""
    found = set(p._option_string_actions)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def check_command(root, module, args):
    """None, or why the command would be refused."""
    from legacy_eager.errors import UsageError

    synopsis = any(is_placeholder(word) for word in args)
    if module == "--print-install":
        return None
    if module == "test":
        if synopsis:
            return None
        if "--fast" in args[1:]:
            return "--fast must come first: ./run.sh test --fast [PYTEST ARGS]"
        missing = [a for a in args if a.startswith("tests/")
                   and not os.path.exists(os.path.join(root, a.split("::")[0]))]
        return f"no such test file: {', '.join(missing)}" if missing else None
    try:
        p = parser_of(module)
    except LookupError as e:
        return str(e)
    if synopsis:
        flags = {w.strip("[]").split("=")[0] for w in args if w.strip("[]").startswith("--")}
        unknown = sorted(f for f in flags if len(f) > 2 and f not in option_strings(p))
        return f"unrecognized arguments: {' '.join(unknown)}" if unknown else None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints, then exits 0
            p.parse_args(args)
    except UsageError as e:
        return str(e)
    except SystemExit as e:
        return None if e.code in (0, None) else f"exit {e.code}"
    return None


# Flags tables

def table_cells(row):
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def flags_tables(prose):
    """(command, line number, rows: [(line number, cells)]) of each marked table; a marker
    without a flags table under it is (command, line number, None)."""
    index = {number: i for i, (number, _) in enumerate(prose)}
    for number, line in prose:
        marker = re.match(r"^\s*<!--\s*flags:\s*(.+?)\s*-->\s*$", line)
        if not marker:
            continue
        following = prose[index[number] + 1:]
        while following and not following[0][1].strip():
            following = following[1:]
        table = []
        for row_number, row in following:
            if not row.lstrip().startswith("|"):
                break
            table.append((row_number, table_cells(row)))
        if not table or [c.lower() for c in table[0][1]] != FLAGS_HEADER:
            yield marker.group(1), number, None
        else:
            yield marker.group(1), number, table[2:]


def check_flags_table(command, rows):
    """Why the table and the parser disagree: a list of reasons, empty when they agree."""
    try:
        p = parser_of(command)
    except LookupError as e:
        return [str(e)]
    actions = {a.option_strings[-1]: a for a in p._actions
               if a.option_strings and a.option_strings[-1] not in ("-h", "--help")}
    documented = {}
    for _, cells in rows:
        for name in re.findall(r"`(--[a-z0-9][a-z0-9-]*)", cells[0]):
            documented[name] = cells[1] if len(cells) > 1 else ""
    reasons = []
    missing, extra = sorted(set(actions) - set(documented)), sorted(set(documented) - set(actions))
    if missing:
        reasons.append(f"missing {', '.join(missing)}")
    if extra:
        reasons.append(f"not flags of {command}: {', '.join(extra)}")
    for name, default in documented.items():
        if name not in actions:
            continue
        expected = actions[name].default
        if re.fullmatch(r"-?[0-9][0-9.]*(e-?[0-9]+)?", default):
            same = isinstance(expected, (int, float)) and float(default) == expected
        elif re.fullmatch(r"`[\w.-]+`", default):
            same = expected is not None and default.strip("`") == str(expected)
        elif default == "off":
            same = expected is False
        else:
            continue
        if not same:
            reasons.append(f"{name} default {default}, the parser's is {expected!r}")
    return reasons


def check_docs(root):
    """Every failure in root's pages, as `FILE:LINE: what: why`."""
    failures = []
    for page in pages(root):
        name = os.path.relpath(page, root)
        prose, blocks = split_page(page)
        for number, target in links(prose):
            why = check_link(root, page, target)
            if why:
                failures.append(f"{name}:{number}: ({target}): {why}")
        for number, line in command_lines(blocks):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as e:
                if re.search(r"\./run\.sh|python[\d.]*\s+-m\s|davidnet-", line):
                    failures.append(f"{name}:{number}: {line.strip()}: cannot split ({e})")
                continue
            for command in commands(words):
                runs = what_runs(command)
                why = runs and check_command(root, *runs)
                if why:
                    failures.append(f"{name}:{number}: {' '.join(command)}: {why}")
        for command, number, rows in flags_tables(prose):
            if rows is None:
                failures.append(f"{name}:{number}: flags: {command}: no `| flag | default | "
                                "meaning |` table under the marker")
                continue
            failures += [f"{name}:{number}: flags table of {command}: {why}"
                         for why in check_flags_table(command, rows)]
    return failures


def test_the_docs_links_commands_and_flags_tables():
    failures = check_docs(ROOT)
    assert not failures, "\n" + "\n".join(failures)


def test_the_training_flags_are_in_a_checked_table():
    """The training flags are documented in a marked table (docs/training.md), which
    check_docs compares with the parser."""
    training = ("legacy_eager.train", "export.train_and_export")
    tables = [rows for page in pages(ROOT) for command, _, rows in flags_tables(split_page(page)[0])
              if command in training and rows]
    assert tables and all(len(rows) >= 20 for rows in tables)


PLANTED = {
    "README.md": """# Planted

[fine](docs/guide.md#second-usage), [fine too](docs/guide.md#usage-1), [here](#planted)
[gone](docs/missing.md) and ![gone picture](pictures/none.png)
[no such heading](docs/guide.md#usage-2) and [not fetched](https://example.com/nowhere)
`[inside code](nowhere.md)` is not a link.

```bash
./run.sh --width 16 --data /nonexistent/cifar --out /tmp/x   # paths need not exist
./run.sh --no-such-flag
CI=true ./run.sh --epochs 0 && python -m export.serve --help
./run.sh repro --runs N --out DIR [--no-such-flag]   # a synopsis: only its flags
./run.sh test --fast tests/test_here.py -k thing
./run.sh test tests/test_gone.py
/opt/venv/bin/davidnet-serve --port 99999 | tee log; .venv/bin/python -m export.onnx --run r --int9
python -m pytest --not-ours 2> /dev/null   # not this project's: not checked
```

```
$ python -m export.predict m.onnx x.png \\
    --top-k 3 --tta
$ python -m export.predict m.onnx x.png --top-k many
echo ./run.sh --not-a-command-in-a-plain-block
```
""",
    "docs/guide.md": """# Guide

## Usage

## Usage

## Second usage

[back](../README.md#planted) [out of the repository](../../elsewhere.md)

<!-- flags: export.publish -->
| flag | default | meaning |
| --- | --- | --- |
| `RUN_DIR` | | positional |
| `--versions N` | 3 | no such flag, and --version is missing |

<!-- flags: bench serve -->

| flag | default | meaning |
| --- | --- | --- |
| `--quick` | on | not checked: neither number, word nor off |

<!-- flags: export.model_repository -->
| flag | default | meaning |
| --- | --- | --- |
| `--name` | `davidnet` | |
| `--max-batch-size` | 128 | wrong |
| `--max-queue-delay-us` | 2000 | |

<!-- flags: export.nothing -->
| flag | default | meaning |
| --- | --- | --- |

<!-- flags: export.serve -->
Prose, not a table.
""",
    "tests/test_here.py": "",
}


def test_the_checker_reports_every_planted_error_with_its_file_and_line(tmp_path):
    for name, text in PLANTED.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text(text)
    assert check_docs(str(tmp_path)) == [
        "README.md:4: (docs/missing.md): no such file or folder",
        "README.md:4: (pictures/none.png): no such file or folder",
        "README.md:5: (docs/guide.md#usage-2): no heading with the anchor #usage-2 in "
        "docs/guide.md",
        "README.md:10: ./run.sh --no-such-flag: unrecognized arguments: --no-such-flag",
        "README.md:11: CI=true ./run.sh --epochs 0: argument --epochs: expected a positive "
        "integer (a positive number such as 9.9 with --recipe airbench94), got 0",
        "README.md:12: ./run.sh repro --runs N --out DIR [--no-such-flag]: unrecognized "
        "arguments: --no-such-flag",
        "README.md:14: ./run.sh test tests/test_gone.py: no such test file: tests/test_gone.py",
        "README.md:15: /opt/venv/bin/davidnet-serve --port 99999: argument --port: expected a "
        "port 0..65535, got 99999",
        "README.md:15: .venv/bin/python -m export.onnx --run r --int9: unrecognized arguments: "
        "--int9",
        "README.md:22: python -m export.predict m.onnx x.png --top-k many: argument --top-k: "
        "expected a positive integer, got 'many'",
        "docs/guide.md:9: (../../elsewhere.md): points outside the repository",
        "docs/guide.md:11: flags table of export.publish: missing --version",
        "docs/guide.md:11: flags table of export.publish: not flags of export.publish: --versions",
        "docs/guide.md:23: flags table of export.model_repository: --max-batch-size default "
        "128, the parser's is 256",
        "docs/guide.md:30: flags table of export.nothing: no module export.nothing (No module "
        "named 'export.nothing')",
        "docs/guide.md:34: flags: export.serve: no `| flag | default | meaning |` table under "
        "the marker",
    ]
