"""Models the user supplies, for datasets that publish no embeddings or scores: an image encoder
(`--embed-model FILE.onnx`) whose embeddings a scan writes in LAION's layout under
OUT/embeddings/ (what `safeset expand` reads), and score models (`--score-model NAME=FILE`) that
turn each embedding into a signal NAME for the policy's rules: e.g. a user's export of LAION's
CLIP-based NSFW detector, which is how LAION's `punsafe` was made.

Nothing is downloaded, ever: a model is a file the user names. Both run on ONNX Runtime on the
CPU, one thread per worker (`safeset[models]`).

- The encoder takes a batch of RGB images as float32 (N, 3, H, W), H and W from its input's shape
  (224 where the shape leaves them open), prepared as CLIP's image processor prepares them: the
  shorter side resized to H (bicubic), the centre cropped, scaled to [0, 1] and normalised with
  CLIP's means and deviations. Its first output, (N, d), is the embedding, stored L2-normalised as
  float16 (LAION's form).
- A score model takes the normalised embeddings (N, d) and gives one number each: an ONNX model
  (its first output, (N,) or (N, 1)), or an `.npz` of dense layers `w0, b0, w1, b1, ...`, each
  x @ w + b, ReLU between them and a sigmoid after the last (the shape of LAION's detector).

The encoder's input is prepared from the image's bytes while they are in memory for hashing, held
as uint8 only until its batch is encoded, and dropped; the bytes are never written anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .._optional import import_optional
from ..errors import BadInputError, UsageError
from ..hashing.image import DecodeLimits, decode_reduced

EXTRA = "models"
_BATCH = 32
_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def _session(path: str):
    ort = import_optional("onnxruntime", extra=EXTRA)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # a worker is one core
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a missing or malformed file
        raise BadInputError(path, f"not an ONNX model ONNX Runtime can run ({type(exc).__name__}: {exc})") from None


def prepare(data: bytes, limits: DecodeLimits, size: tuple[int, int]) -> np.ndarray:
    """An encoder's input for encoded image bytes, as uint8 (H, W, 3) for `size` (H, W), CLIP's
    way (see the module); `DecodeError` as for hashing."""
    height, width = size
    image = decode_reduced(data, min(height, width), limits)
    scale = max(height / image.height, width / image.width)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.BICUBIC,
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)), np.uint8)


class Encoder:
    """An image encoder: its input `size` (H, W), and `embed` for a batch of `prepare`d images."""

    def __init__(self, path: str):
        self.path = path
        self._model = _session(path)
        shape = self._model.get_inputs()[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise BadInputError(path, f"takes input of shape {shape}: an image encoder takes (N, 3, H, W)")
        self.size = tuple(s if isinstance(s, int) and s > 0 else 224 for s in shape[2:4])

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, d) of prepared images, in order."""
        name = self._model.get_inputs()[0].name
        found = []
        for start in range(0, len(images), _BATCH):
            batch = np.stack(images[start : start + _BATCH]).astype(np.float32) / 255
            batch = ((batch - _MEAN) / _STD).transpose(0, 3, 1, 2)
            out = np.asarray(self._model.run(None, {name: np.ascontiguousarray(batch)})[0], np.float32)
            if out.ndim != 2 or len(out) != len(batch):
                raise BadInputError(self.path, f"gave output of shape {out.shape} for {len(batch)} images, not (N, d)")
            found.append(out)
        vectors = np.concatenate(found) if found else np.zeros((0, 0), np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class Scorer:
    """A score model: embeddings (N, d) -> one score each (see the module)."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path
        if str(path).endswith(".npz"):
            try:
                with np.load(path, allow_pickle=False) as layers:
                    self._layers = [(layers[f"w{i}"], layers[f"b{i}"]) for i in range(len(layers.files) // 2)]
            except (OSError, ValueError, KeyError) as exc:
                raise BadInputError(path, f"not an .npz of dense layers w0, b0, w1, b1, ... ({exc})") from None
            if not self._layers or any(w.ndim != 2 or b.shape != (w.shape[1],) for w, b in self._layers):
                raise BadInputError(path, "its layers are not (d_in, d_out) weights with (d_out,) biases")
            self._model = None
        else:
            self._model = _session(path)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, np.float32)
        if self._model is not None:
            out = np.asarray(self._model.run(None, {self._model.get_inputs()[0].name: x})[0], np.float32)
        else:
            if x.shape[1] != self._layers[0][0].shape[0]:
                wanted = self._layers[0][0].shape[0]
                raise BadInputError(self.path, f"takes {wanted}-d embeddings, given {x.shape[1]}-d")
            for i, (w, b) in enumerate(self._layers):
                x = x @ w.astype(np.float32) + b.astype(np.float32)
                x = np.maximum(x, 0) if i < len(self._layers) - 1 else 1 / (1 + np.exp(-x))
            out = x
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != (len(embeddings),):
            raise BadInputError(self.path, f"gave scores of shape {out.shape} for {len(embeddings)} embeddings")
        return out


def parse_score_models(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`NAME=FILE` options as (name, path); a usage error names what is wrong."""
    found = []
    for value in values:
        name, _, path = value.partition("=")
        if not name or not path or not name.replace("_", "").replace(".", "").isalnum():
            raise UsageError(f"--score-model {value!r}: expected NAME=FILE (NAME letters, digits, _ and .)")
        if not Path(path).is_file():
            raise UsageError(f"--score-model {name}: no such file {path}")
        found.append((name.lower(), path))
    return tuple(found)


def require() -> None:
    import_optional("onnxruntime", extra=EXTRA)
