"""The whitening layer's filters: a 2x2 convolution (3 -> 24 channels, no padding) whose
first 12 filters are the eigenvectors of the 2x2 patches' covariance, each divided by the
square root of its eigenvalue (+ eps), and whose last 12 are their negatives (so that the
GELU after it keeps both signs). Numpy only; float64 throughout.

As airbench94.py: every 2x2 patch (stride 1) of the normalised training images, the
uncentred covariance patches^T patches / n, eigenvectors from the largest eigenvalue down.
"""
import numpy as np


def patches(images, size=2):
    """Every size x size patch of NHWC images, flattened in (row, column, channel) order:
    [N * (H - size + 1) * (W - size + 1), size * size * C]."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))
    # windows: [N, H', W', C, size, size] -> [.., size, size, C]
    windows = np.moveaxis(windows, 3, -1)
    return windows.reshape(-1, size * size * images.shape[-1]).astype(np.float64)


def patch_covariance(images, size=2, chunk=500):
    """patches^T patches / n, summed `chunk` images at a time (all 5,000 images' patches
    at once would take 460 MB in float64)."""
    total, n = 0, 0
    for i in range(0, len(images), chunk):
        flat = patches(images[i:i + chunk], size)
        total, n = total + flat.T @ flat, n + len(flat)
    return total / n


def whitening_parameters(images, size=2):
    """(eigenvalues descending, eigenvectors as rows) of the patches' covariance."""
    eigenvalues, eigenvectors = np.linalg.eigh(patch_covariance(images, size))
    return eigenvalues[::-1], eigenvectors.T[::-1]


def whitening_kernel(images, size=2, eps=None):
    """The Keras Conv2D kernel [size, size, C, 2 * size * size * C] (HWIO) for `images`
    (normalised NHWC floats)."""
    from airbench_tf.hyp import WHITEN_EPS

    eps = WHITEN_EPS if eps is None else eps
    eigenvalues, eigenvectors = whitening_parameters(images, size)
    scaled = eigenvectors / np.sqrt(eigenvalues + eps)[:, None]
    filters = np.concatenate([scaled, -scaled])            # [24, size * size * C]
    c = images.shape[-1]
    # rows are (row, column, channel)-ordered patches; HWIO puts the filter index last
    return filters.reshape(-1, size, size, c).transpose(1, 2, 3, 0)
