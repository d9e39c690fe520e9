"""The official python version (cifar-10-python.tar.gz, cifar-10-batches-py/): pickled
batches, read with an unpickler that admits only what a CIFAR batch holds (numpy arrays,
dicts, lists, bytes, numbers), so a crafted file cannot run code. Framework-free."""
import io
import pickle

import numpy as np

from legacy_eager.data.common import DataError, check_labels, chw_rows_to_images

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how a Python 3 protocol-2 pickle spells bytes
}


class _BatchUnpickler(pickle.Unpickler):
    """Admits only numpy arrays (plus dicts, lists, bytes and numbers, which need no
    global). Anything else, e.g. a crafted os.system call, is refused before it runs."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def unpickle_batch(raw, where):
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{where}: not a CIFAR-10 batch ({e}); a CIFAR batch holds only "
                        "numpy arrays and lists") from None
    except Exception as e:  # truncated or garbage bytes
        raise DataError(f"{where}: cannot read CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (expected a dict)")
    batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{where}: not a CIFAR-10 batch (no 'data' array or 'labels')")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: 'data' is {data.dtype}{list(data.shape)}, expected uint8 [N, 3072]")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray([], dtype=object)
    if labels.dtype.kind not in "iu":  # float, string, bool or ragged labels are no CIFAR batch
        raise DataError(f"{where}: labels must be {len(data)} integers in 0..9, "
                        f"got {labels.dtype} values")
    return chw_rows_to_images(data), check_labels(labels.astype(np.int64), len(data), where)
