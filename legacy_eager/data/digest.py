"""What a --data source holds, as one SHA-256, so that two machines mounting the same
archive or folder at different paths agree, and a changed image does not. Framework-free.

An archive (any file) is hashed as its bytes, read in 1 MiB blocks (what `sha256sum` prints;
the 134 MB PNG archive takes under a second). A folder is hashed as the sorted listing of the
files the loader could read (layouts.walk_folder), each as its relative path, its size and
its bytes, so a file renamed, added, removed or changed changes the digest. Nothing is
cached: a cache keyed by path and modification time would trust exactly what the digest is
there to check."""
import hashlib
import os

from legacy_eager.data.layouts import walk_folder

BLOCK = 1 << 20
DOWNLOAD = "tf.keras.datasets.cifar10"  # no --data: the seed's download, the same everywhere


def _add_file(h, path):
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK)
            if not block:
                return
            h.update(block)


def content_digest(path):
    """"sha256:<hex>" of the file or folder at `path`; None is the seed's download."""
    if path is None:
        return DOWNLOAD
    h = hashlib.sha256()
    if os.path.isdir(path):
        for parts, file_path in walk_folder(path):
            h.update(f"{'/'.join(parts)}\0{os.path.getsize(file_path)}\0".encode())
            _add_file(h, file_path)
    else:
        _add_file(h, path)
    return "sha256:" + h.hexdigest()
