"""Test-time augmentation as data: a list of views, each a weight, a translation and a
mirror flip; the TTA logits are the weighted sum of the views' logits. Framework-free
(numpy), so export.predict and the server apply a model's own TTA, read from its ONNX
metadata, without knowing which recipe made it.

The seed's port averages an image with its mirror image (FLIP); airbench94's level 2 adds
two 1-pixel translations (airbench_tf.hyp.TTA_VIEWS). A view translates first (reflect
padding), then flips, as airbench94's infer_mirror_translate does.
"""
import json
from typing import NamedTuple

import numpy as np


class View(NamedTuple):
    weight: float
    flip: bool = False   # mirror left-right (after the translation)
    dy: int = 0          # the view's pixel (i, j) is the image's (i + dy, j + dx),
    dx: int = 0          # reflected at the border


PLAIN = (View(1.0),)
# Flip TTA (the seed's port, Page's DAWNBench entries): the image and its mirror, 1/2 each.
FLIP = (View(0.5), View(0.5, flip=True))


def to_json(views):
    return json.dumps([v._asdict() for v in views])


def from_json(text, where="tta_views"):
    """Views from to_json's text; ValueError naming `where` if they are not views."""
    try:
        views = tuple(View(float(v["weight"]), bool(v["flip"]), int(v["dy"]), int(v["dx"]))
                      for v in json.loads(text))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where}: not a list of TTA views ({type(e).__name__}: {e})") from None
    if not views or abs(sum(v.weight for v in views) - 1) > 1e-6 or any(
            max(abs(v.dy), abs(v.dx)) > 8 for v in views):
        raise ValueError(f"{where}: expected views whose weights sum to 1 and shifts of at "
                         "most 8 pixels")
    return views


def describe(views):
    """'flip TTA' for FLIP, else 'TTA of N views'."""
    return "flip TTA" if tuple(views) == FLIP else f"TTA of {len(views)} views"


def view_images(images, view):
    """`view` of NHWC images (any dtype), as a new contiguous array."""
    out = images
    if view.dy or view.dx:
        p = max(abs(view.dy), abs(view.dx))
        padded = np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
        h, w = images.shape[1:3]
        out = padded[:, p + view.dy:p + view.dy + h, p + view.dx:p + view.dx + w]
    if view.flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def combine(view_logits, views):
    """The weighted sum of each view's logits (a list in the order of `views`)."""
    total = sum(np.float64(v.weight) * np.asarray(lg, np.float64) for v, lg in zip(views, view_logits))
    return total.astype(np.float32)
