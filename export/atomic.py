"""Replace a file or folder so that readers see the old one or the new one, never half."""
import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def staged_path(target, is_dir):
    """Yield a scratch path beside `target`; on success it takes `target`'s place, on any
    error it is removed and `target` is untouched."""
    parent = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    scratch = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(scratch, 0o777 & ~umask)  # mkdtemp's 0700 would leave the export private
    staged = scratch if is_dir else os.path.join(scratch, base)
    try:
        yield staged
        if is_dir:
            old = None
            if os.path.exists(target):
                old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
                os.replace(target, os.path.join(old, base))
            os.replace(staged, target)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
