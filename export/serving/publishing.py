"""Publishing a model to a serving base path as its next version, atomically: the model is
checked as the server checks it, copied into a hidden scratch folder inside the base path and
only then renamed to BASE/N, so a server polling the base path never sees a half-written
version; an existing version is never replaced. (`python -m export.publish` is its command
line.)"""
import os
import shutil

from legacy_eager.atomic import staged_path
from legacy_eager.errors import UsageError


def next_version(base):
    numbers = [int(n) for n in os.listdir(base) if n.isdigit()]
    return max(numbers, default=0) + 1


def publish(model, base, version=None, log=print):
    """Copy `model` into base/N atomically; returns N."""
    from export.serving import models

    path = models.model_path(model)
    try:
        models.load_file(path, threads=1)
    except models.Refused as e:
        raise UsageError(f"{model}: a server would refuse it: {e}") from None
    if os.path.exists(base) and not os.path.isdir(base):
        raise UsageError(f"{base}: exists and is not a folder")
    os.makedirs(base, exist_ok=True)
    version = version or next_version(base)
    target = os.path.join(base, str(version))
    if os.path.exists(target):
        raise UsageError(f"--version {version}: {target} exists; a published version is never "
                         "replaced")
    with staged_path(target, is_dir=True) as staged:
        shutil.copyfile(path, models.model_file(staged))
    log(f"published {path} as version {version}: {target}")
    return version
