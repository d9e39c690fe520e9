"""The one place that writes then renames: replace a file or folder so that readers see
the old one or the new one, never half, and a crash at any moment leaves one of them under
the real name (at worst until the next start, which puts it back). Framework-free; used by
the run folder (config, metrics, summary, pictures, the decode cache), the exports, repro's
report and publishing a served version; create_exclusive, by repro's sweep record and claims.

A folder is swapped in three renames-and-removes: the previous copy is moved aside into
`.NAME.old-*/NAME`, the new one is renamed into place, and only then is the previous copy
deleted. A crash between the first two leaves no NAME, but the previous copy whole:
`recover(target)`, which every staged_path runs first, renames it back.
"""
import errno
import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager


def _between(step):
    """Called between the swap's steps; tests replace it to crash the process there."""


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _aside(target):
    parent, base = os.path.split(os.path.abspath(target))
    return sorted(glob.glob(os.path.join(parent, f".{base}.old-*")))


def recover(target):
    """After a crash: put the previous copy back if the target is missing, and remove
    scratch and stale previous copies. Returns True when it put a copy back."""
    parent, base = os.path.split(os.path.abspath(target))
    restored = False
    for folder in reversed(_aside(target)):
        kept = os.path.join(folder, base)
        if not os.path.exists(target) and os.path.exists(kept):
            os.replace(kept, target)
            restored = True
        shutil.rmtree(folder, ignore_errors=True)
    for scratch in glob.glob(os.path.join(parent, f".{base}.tmp-*")):
        shutil.rmtree(scratch, ignore_errors=True)
    return restored


@contextmanager
def staged_path(target, is_dir):
    """Yield a scratch path beside `target`; on success it takes `target`'s place, on any
    error it is removed and `target` is untouched."""
    recover(target)
    parent = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    scratch = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    os.chmod(scratch, 0o777 & ~_umask())  # mkdtemp's 0700 would leave the export private
    staged = scratch if is_dir else os.path.join(scratch, base)
    try:
        yield staged
        _between("staged")
        if is_dir:
            aside = None
            if os.path.exists(target):
                aside = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
                os.replace(target, os.path.join(aside, base))
                _between("previous moved aside")
            os.replace(staged, target)
            _between("new in place")
            if aside:
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_text(path, text):
    """`text` as the file `path`, whole or not at all."""
    with staged_path(path, is_dir=False) as staged:
        with open(staged, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, obj):
    """`obj` as indented, key-sorted JSON in `path`, whole or not at all."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# Filesystems without hard links (some FUSE and SMB mounts) say so with one of these.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def create_exclusive(path, text):
    """`text` as the new file `path`, unless a file of that name exists: True when this call
    made it, False when one was there already (its content untouched). Two processes, on one
    machine or on two sharing a filesystem, never both get True, and nobody reads the file
    half written: the text is written and flushed to a scratch file beside it, then
    hard-linked to `path`, and link(2) fails when the name exists, atomically, on local
    filesystems and NFS alike (no flock, which NFS does not keep reliably). A retransmitted
    NFS link can answer EEXIST although it did link: the scratch file's link count, 2, says
    so. Where hard links are refused, O_CREAT|O_EXCL makes the file (whole once written)."""
    parent, base = os.path.split(os.path.abspath(path))
    fd, scratch = tempfile.mkstemp(prefix=f".{base}.new-", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(scratch, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from the others
        try:
            os.link(scratch, path)
            return True
        except FileExistsError:
            return os.stat(scratch).st_nlink == 2
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        try:
            os.unlink(scratch)
        except FileNotFoundError:
            pass
