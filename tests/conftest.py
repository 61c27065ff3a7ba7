"""Shared fixtures. Every image is a benign photo (scikit-image's CC0 / public-domain samples); the
"known bad" images of these tests are such photos put on a test list."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from PIL import Image

from safeset.banks import BankStore
from safeset.demo import load_photo, photo_tiles

# A shell that starts the suite in the background (`make test &`) has it ignore SIGINT, and every
# process it starts would inherit that: the Ctrl-C tests would then see a scan that cannot be
# interrupted. Python's own handler is reset to the default in the processes the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiles() -> list[tuple[str, Image.Image]]:
    return photo_tiles()


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    return load_photo("coffee.png")


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home) -> BankStore:
    return BankStore(home)
