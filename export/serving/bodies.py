"""Predict request bodies -> uint8 images [N, 32, 32, 3], and answers -> JSON bytes.

The server runs `parse_request` in a worker thread, one call per request, never on the
event loop: a body of many large images takes as long as it takes without holding up the
other requests. An image's width and height are read from its header and checked against
the pixel cap before a single pixel is decoded. JSON is read and written with orjson.
"""
import base64
import binascii
import io
from typing import NamedTuple

import numpy as np
import orjson

from export.predict import to_model_input

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


class BadRequest(Exception):
    """Answered as {"error": message} with the given HTTP status; `close`: and the
    connection closed after it (a body left unread)."""

    def __init__(self, message, status=400, close=False):
        super().__init__(message)
        self.status, self.close = status, close


class Parsed(NamedTuple):
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    columnar: bool      # "inputs" (answer with "outputs") rather than "instances"
    tta: bool           # flip test-time augmentation asked for in the body


def decode_b64(value, where, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """A base64 image file as uint8 [32, 32, 3]; its size checked from the header first."""
    from PIL import Image

    if not isinstance(value, str):
        raise BadRequest(f"{where}: \"b64\" must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: \"b64\" is not valid base64") from None
    try:
        img = Image.open(io.BytesIO(raw))  # reads the header only
    except Image.DecompressionBombError as e:  # Pillow's own cap, far above ours
        raise BadRequest(f"{where}: {e}") from None
    except Exception as e:
        raise BadRequest(f"{where}: undecodable image ({type(e).__name__})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise BadRequest(f"{where}: image of {width}x{height} = {width * height} pixels; at "
                             f"most {max_pixels} (--max-image-pixels)")
        try:
            img.load()
            return to_model_input(img)
        except Exception as e:
            raise BadRequest(f"{where}: undecodable image ({type(e).__name__})") from None


def pixels(value, where, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """One instance (a 32x32x3 nested list of 0..255 integers, {"b64": ...} or
    {"images": ...}) as uint8 [32, 32, 3]."""
    if isinstance(value, dict):
        if "b64" in value:
            return decode_b64(value["b64"], where, max_pixels)
        if "images" in value:  # {"images": ...}: the input named, as TF Serving allows
            return pixels(value["images"], where, max_pixels)
        raise BadRequest(f"{where}: expected a 32x32x3 list of 0..255 integers or "
                         "{\"b64\": ...}")
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError):
        array = None
    if array is None or array.dtype == object or array.shape != (32, 32, 3):
        shape = "ragged" if array is None or array.dtype == object else list(array.shape)
        raise BadRequest(f"{where}: shape {shape}, expected [32, 32, 3] (height, width, RGB)")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise BadRequest(f"{where}: values must be integers 0..255, got {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        bad = low if low < 0 else high
        raise BadRequest(f"{where}: value {bad} outside 0..255")
    return array.astype(np.uint8)


def parse_request(body, max_instances, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """A TensorFlow Serving predict body (row or columnar format) as Parsed."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e):
            raise BadRequest("request body is nested too deeply") from None
        raise BadRequest(f"request body is not JSON ({e})") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise BadRequest("expected a JSON object with \"instances\" (row format) or \"inputs\" "
                         "(columnar format)")
    columnar = "inputs" in request
    key = "inputs" if columnar else "instances"
    items = request[key]
    if columnar and isinstance(items, dict):
        if "images" not in items:
            raise BadRequest("\"inputs\": expected the input \"images\"")
        items = items["images"]
    if isinstance(items, dict) and "b64" in items:
        items = [items]
    if not isinstance(items, list) or not items:
        raise BadRequest(f"\"{key}\" must be a non-empty list")
    if len(items) > max_instances:
        raise BadRequest(f"{len(items)} instances; at most {max_instances} per request "
                         "(--max-instances)", status=413)
    tta = request.get("tta", False)
    if not isinstance(tta, bool):
        raise BadRequest("\"tta\" must be true or false")
    images = np.stack([pixels(item, f"{key}[{i}]", max_pixels) for i, item in enumerate(items)])
    return Parsed(images, columnar, tta)


def format_response(logits, probs, class_names, columnar):
    """TensorFlow Serving's answer (predictions, or outputs for the columnar format) as
    JSON bytes; float32 rows are written by orjson directly."""
    classes = [class_names[i] for i in np.argmax(logits, axis=1)]
    logits, probs = np.ascontiguousarray(logits), np.ascontiguousarray(probs)
    if columnar:
        answer = {"outputs": {"logits": logits, "probabilities": probs, "class": classes}}
    else:
        answer = {"predictions": [{"logits": lg, "probabilities": p, "class": c}
                                  for lg, p, c in zip(logits, probs, classes)]}
    return dumps(answer)


def dumps(document):
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
