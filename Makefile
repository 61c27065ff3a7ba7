# Two commands set everything up on a fresh machine:
#   make demo   virtual environment, safeset installed, demo dataset built and scanned
#   make test   same environment, then the whole test suite (CI runs this through .ci/run)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/safeset demo build/demo

# Debian packages the tests need: Chromium renders the HTML report in a real headless browser.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (for the report test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Speed, memory and robustness against the peers, each printing its ratios (see README, Performance).
# The corpus comes from Debian's plasma-workspace-wallpapers (apt-get download) and scikit-image.
bench: $(BENCH_STAMP)
	cd benchmarks && for b in pdq index exact scan decide keywords nsfw engines staging fetch robustness expand diff; do ../$(BIN)/python bench_$$b.py || exit 1; done

clean:
	rm -rf build .pytest_cache
