# Two commands: `make run` (set up, then start the app) and `make test` (set up, then test).
# Each is idempotent: the venv, the pinned dependencies and the weights are made once.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAM    := weights/mobile_sam.pt
PORT   ?= 8501

.PHONY: run test setup weights lint benchmark contact-sheet train evaluate-val clean

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
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_app.py

# The shipped model: train (about 100 min on 2 CPU cores; resumable), then export in half precision.
CONFIG ?= configs/lite0-film-224.yaml
RUN    ?= runs/lite0-film-224
train: setup
	$(VENV)/bin/boneage train --config $(CONFIG) --resume
	$(VENV)/bin/boneage export --checkpoint $(RUN)/best.pt --out assets/models/boneage-lite0-224.pt \
		--val-images ../shared/data/rsna-train/images --val-labels configs/splits/rsna-val.csv

# The validation figures of the README and docs/MODEL_CARD.md, from the shipped model.
evaluate-val: setup
	$(VENV)/bin/boneage evaluate --images ../shared/data/rsna-train/images \
		--labels configs/splits/rsna-val.csv --out out/eval-val

# The contact sheet of the README: all full-resolution films of ../shared/data, overlays in one PNG.
contact-sheet: setup
	$(PY) -m boneage_core.cli preprocess --images ../shared/data/rsna-fullres --out out/fullres \
		--labels ../shared/data/rsna-fullres/labels.csv
	$(PY) -m boneage_core.cli contact-sheet --manifest out/fullres/manifest.csv --out out/fullres/contact_sheet.png

clean:
	rm -rf $(VENV) weights out .pytest_cache .ruff_cache
