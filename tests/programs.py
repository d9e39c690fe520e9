"""Programs from outside Python that a few tests drive (curl, Chromium and its driver).
Missing, the test skips and says what to install; in CI (CI=true) it fails instead, so a
green CI has run it."""
import os
import shutil

import pytest


def find(*names, install):
    """The path of the first of `names` on PATH; else skip (fail when CI=true), naming
    `install`, what provides it."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"no {' or '.join(names)} on PATH ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true: this test must run", pytrace=False)
    pytest.skip(message)
