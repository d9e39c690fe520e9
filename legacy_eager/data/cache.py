"""The decode cache: each --data source is decoded once and kept as an .npz keyed by its
path, size and modification time (CIFAR10_CACHE, else ~/.cache/davidnet), written whole or
not at all; a damaged entry is rebuilt, an unwritable cache only costs the next run the
decode time. Framework-free."""
import hashlib
import os
import sys

import numpy as np

from legacy_eager.atomic import staged_path
from legacy_eager.data import layouts
from legacy_eager.data.common import CACHE_VERSION, Cifar10, DataError


def default_cache_dir():
    if os.environ.get("CIFAR10_CACHE"):
        return os.environ["CIFAR10_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "davidnet-tf")


def _fingerprint(path):
    """Changes whenever any file the layout could use changes (path, size, mtime)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{os.path.abspath(path)}".encode())
    if os.path.isdir(path):
        entries = ((parts, os.stat(p)) for parts, p in layouts.walk_folder(path))
    else:
        entries = [((), os.stat(path))]
    for parts, st in entries:
        h.update(f"|{'/'.join(parts)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_cifar10(path, cache_dir=None):
    """Decode `path`, or reuse the arrays decoded from the same unchanged files before."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder")
    cache_dir = cache_dir or default_cache_dir()
    cache_file = os.path.join(cache_dir, f"cifar10-{_fingerprint(path)}.npz")
    if os.path.exists(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                return Cifar10(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                               layout=str(z["layout"]), path=path)
        except Exception:
            pass  # a damaged cache entry is rebuilt below
    data = layouts.read_cifar10(path)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with staged_path(cache_file, is_dir=False) as staged:
            np.savez(staged, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                     y_test=data.y_test, layout=np.array(data.layout))
    except OSError as e:  # an unwritable cache only costs the next run the decode time
        print(f"warning: cannot write the decode cache {cache_file} ({e.strerror or e}); "
              "the next run decodes the images again (set CIFAR10_CACHE to another folder)",
              file=sys.stderr)
    return data
