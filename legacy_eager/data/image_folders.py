"""Image-folder trees (train/<class>/*, test/<class>/*): one 32x32 image file, any format
Pillow reads, decoded to uint8 RGB. Framework-free (Pillow)."""
import io

import numpy as np

from legacy_eager.data.common import DataError


def decode_image(raw, where):
    from PIL import Image  # Pillow: only needed for image-folder trees

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            size = img.size
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DataError(f"{where}: unreadable or corrupt image ({type(e).__name__})") from None
    if size != (32, 32):
        raise DataError(f"{where}: image is {size[0]}x{size[1]}, expected 32x32 (CIFAR-10)")
    return rgb
