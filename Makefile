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

# The shipped model (about 3.5 h on 2 CPU cores; every step resumes): a 224 px run, a 299 px run
# warm-started from it, and their ensemble with test-time zooms and rotations, validated and exported in
# half precision (the validation figures are stored in the checkpoint: each estimate's uncertainty).
VAL    := --val-images ../shared/data/rsna-train/images --val-labels configs/splits/rsna-val.csv
train: setup
	$(VENV)/bin/boneage train --config configs/lite0-film-224.yaml --resume
	$(VENV)/bin/boneage export --checkpoint runs/lite0-film-224/best.pt --out assets/models/boneage-lite0-224.pt $(VAL)
	$(VENV)/bin/boneage train --config configs/lite0-film-299-warm.yaml --resume
	$(VENV)/bin/boneage ensemble runs/lite0-film-299-warm/best.pt assets/models/boneage-lite0-224.pt \
		--version 0.2.0+lite0-ens-299-224-geo4 --tta geo4 --out assets/models/boneage-lite0-ens.pt $(VAL)

# The validation figures of the README and docs/MODEL_CARD.md, from the shipped model.
evaluate-val: setup
	$(VENV)/bin/boneage evaluate --images ../shared/data/rsna-train/images \
		--labels configs/splits/rsna-val.csv --out out/eval-val
	cp out/eval-val/metrics.json out/eval-val/predictions.csv assets/eval/rsna-val/

# The contact sheet of the README: all full-resolution films of ../shared/data, overlays in one PNG.
contact-sheet: setup
	$(PY) -m boneage_core.cli preprocess --images ../shared/data/rsna-fullres --out out/fullres \
		--labels ../shared/data/rsna-fullres/labels.csv
	$(PY) -m boneage_core.cli contact-sheet --manifest out/fullres/manifest.csv --out out/fullres/contact_sheet.png

clean:
	rm -rf $(VENV) weights out .pytest_cache .ruff_cache
