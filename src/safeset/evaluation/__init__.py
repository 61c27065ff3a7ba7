"""Evaluation: measuring how robust matching is to the edits images go through, on images of your
own (`safeset bench hashers DIR`), so that thresholds can be chosen per list."""

from .robustness import SCHEMES, Scheme, available_schemes, evaluate
from .transforms import TRANSFORMS, apply

__all__ = ["SCHEMES", "TRANSFORMS", "Scheme", "apply", "available_schemes", "evaluate"]
