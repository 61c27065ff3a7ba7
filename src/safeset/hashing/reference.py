"""Meta's reference PDQ (the `pdqhash` package, C++ via bindings) on the fully decoded image.

It is the oracle the tests and benchmarks hold `safeset.pdq` against, and the peer its speed is
measured against; safeset itself never needs it (install the `reference` extra).
"""

from __future__ import annotations

import numpy as np

from .._optional import import_optional
from .image import DecodeLimits, decode_rgb
from .pdq import PdqHash


def reference_pdq_pixels(rgb: np.ndarray) -> PdqHash:
    pdqhash = import_optional("pdqhash", extra="reference")
    vector, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return PdqHash.from_bit_vector(vector, quality)


def reference_pdq(data: bytes, limits: DecodeLimits = DecodeLimits()) -> PdqHash:
    """What python-threatexchange computes: Pillow's full decode to RGB, then pdqhash."""
    return reference_pdq_pixels(decode_rgb(data, limits))
