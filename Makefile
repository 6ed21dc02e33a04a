# Two commands: `make run` (set up, then start the app) and `make test` (set up, then test).
# Each is idempotent: the venv, the pinned dependencies and the weights are made once.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAM    := weights/mobile_sam.pt
PORT   ?= 8501

.PHONY: run test setup weights lint benchmark contact-sheet clean

run: setup
	$(PY) -m streamlit run app/main.py --server.port $(PORT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

setup: $(STAMP) $(SAM)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

weights: $(SAM)

$(SAM): | $(STAMP)
	$(PY) -m boneage_core.weights

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check boneage_core tests benchmarks app pages

benchmark: setup
	$(PY) benchmarks/bench_segmentation.py

# The contact sheet of the README: all full-resolution films of ../shared/data, overlays in one PNG.
contact-sheet: setup
	$(PY) -m boneage_core.cli preprocess --images ../shared/data/rsna-fullres --out out/fullres \
		--labels ../shared/data/rsna-fullres/labels.csv
	$(PY) -m boneage_core.cli contact-sheet --manifest out/fullres/manifest.csv --out out/fullres/contact_sheet.png

clean:
	rm -rf $(VENV) weights out .pytest_cache .ruff_cache
