"""The peers' virtualenv (PyTorch, OpenVINO, MLServer), outside the repository and never the
project's: made on first use from bench/peers/requirements.txt, and made again when that
file changes (the venv keeps a copy of the requirements it was made from).

Where: $DAVIDNET_PEERS_VENV, else ~/.cache/davidnet-tf/peers-venv (or --peers-venv).
"""
import os
import shutil
import subprocess
import sys

from legacy_eager.errors import UserFacingError

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
ENV_VARIABLE = "DAVIDNET_PEERS_VENV"
STAMP = "davidnet-peers-requirements.txt"  # inside the venv: the requirements it holds


def default_location(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get(ENV_VARIABLE) or os.path.join(
        os.path.expanduser("~"), ".cache", "davidnet-tf", "peers-venv")


def python_of(venv):
    return os.path.join(venv, "bin", "python")


def is_current(venv, requirements=REQUIREMENTS):
    """True when `venv` was made from exactly this requirements file."""
    try:
        with open(os.path.join(venv, STAMP)) as made, open(requirements) as wanted:
            return made.read() == wanted.read() and os.path.exists(python_of(venv))
    except OSError:
        return False


def ensure(venv, log=print, requirements=REQUIREMENTS):
    """The peers' Python, making (or remaking) the venv first when it is not current."""
    if is_current(venv, requirements):
        return python_of(venv)
    log(f"bench peers: making the peers' virtualenv in {venv} from {requirements} "
        "(once; a few minutes)")
    base = getattr(sys, "_base_executable", sys.executable)
    if os.path.exists(venv):
        shutil.rmtree(venv)
    steps = [[base, "-m", "venv", venv],
             [python_of(venv), "-m", "pip", "install", "--disable-pip-version-check", "-q",
              "-r", requirements]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(line for line in done.stderr.strip().splitlines()
                              if not line.startswith("WARNING"))[-400:]
            raise UserFacingError(
                f"{requirements}: could not make the peers' virtualenv in {venv} ({tail}); "
                "where pip cannot find torch==2.13.0+cpu, set "
                "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu")
    shutil.copyfile(requirements, os.path.join(venv, STAMP))
    return python_of(venv)
