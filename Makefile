# Two commands set everything up on a fresh machine:
#   make demo   virtual environment, safeset installed, demo dataset built and scanned
#   make test   same environment, then the whole test suite (CI runs this through .ci/run)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

BENCH_STAMP := $(VENV)/.bench-stamp
VPDQ_STAMP := $(VENV)/.vpdq-stamp

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/safeset demo build/demo

# Debian packages the tests need: Chromium renders the HTML report in a real headless browser;
# FFmpeg's development files and a compiler build Meta's `vpdq` (source only on PyPI), which the
# video tests compare safeset's frame hashes with.
SYSTEM_DEPS := chromium libavcodec-dev libavformat-dev libavdevice-dev libavutil-dev libswscale-dev \
	libswresample-dev libavfilter-dev pkg-config cmake g++
system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

$(VPDQ_STAMP): $(STAMP) | system-deps
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --quiet 'vpdq>=0.2.5'
	touch $(VPDQ_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) system-deps $(VPDQ_STAMP) lint
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP) $(VPDQ_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Speed, memory and robustness against the peers, each printing its ratios (see README, Performance).
# The corpus comes from Debian's plasma-workspace-wallpapers (apt-get download) and scikit-image.
bench: $(BENCH_STAMP)
	cd benchmarks && for b in pdq index exact scan decide keywords nsfw engines staging fetch robustness expand diff video; do ../$(BIN)/python bench_$$b.py || exit 1; done

clean:
	rm -rf build .pytest_cache
