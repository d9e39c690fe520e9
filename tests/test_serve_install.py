"""The `serve` extra alone: `pip install ".[serve]"` into a fresh virtualenv gives a
`davidnet-serve` that answers and a `davidnet-predict` that classifies, in an environment
where `import tensorflow` fails. Needs the package index (about 20 s with a warm pip
cache), so it runs on its own: `./run.sh test -m install` (a step of .ci/run)."""
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests import onnx_models
from tests.serving import ROOT, Server

PIXELS = [[[10, 20, 30]] * 32] * 32


@pytest.mark.slow
@pytest.mark.install
def test_the_serve_extra_serves_without_tensorflow(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:  # the packages it names
        packages = tomllib.load(f)["tool"]["setuptools"]["packages"]
    for package in sorted({name.split(".")[0] for name in packages}):
        shutil.copytree(os.path.join(ROOT, package), source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                           f"{source}[serve]"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    no_tf = subprocess.run([str(venv / "bin" / "python"), "-c", "import tensorflow"], env=env,
                           cwd=tmp_path, capture_output=True, text=True)
    assert "No module named 'tensorflow'" in no_tf.stderr

    model = onnx_models.save(tmp_path / "m.onnx", favourite=8)
    image = str(tmp_path / "x.png")
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 20, 30)).save(image)
    predicted = subprocess.run([str(venv / "bin" / "davidnet-predict"), model, image], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0 and predicted.stdout.startswith(f"{image}\tship "), (
        predicted.stderr[-2000:])
    with Server(model, "--quiet", command=[str(venv / "bin" / "davidnet-serve")], env=env,
                cwd=tmp_path) as server:
        status, body = server.predict({"instances": [PIXELS]})
        assert status == 200 and body["predictions"][0]["class"] == "ship"
        status, page = server.request("GET", "/")
        assert status == 200 and b"DavidNet" in page  # the demo page is package data
        with open(f"/proc/{server.proc.pid}/maps") as f:
            maps = f.read()
        assert str(venv) in maps and "libtensorflow" not in maps
