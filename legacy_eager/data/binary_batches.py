"""The official binary version (cifar-10-binary.tar.gz, cifar-10-batches-bin/): 3073-byte
records, a label byte then 3072 channel-first pixels. Framework-free."""
import numpy as np

from legacy_eager.data.common import DataError, check_labels, chw_rows_to_images


def read_binary_batch(raw, where):
    if len(raw) == 0 or len(raw) % 3073:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of 3073-byte "
                        "CIFAR-10 binary records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    labels = rows[:, 0].astype(np.int64)
    return chw_rows_to_images(rows[:, 1:]), check_labels(labels, len(rows), where)
