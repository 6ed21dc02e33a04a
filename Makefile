# Two commands: `make run` (set up, then start the app) and `make test` (set up, then test).
# Each is idempotent: the venv, the pinned dependencies and the weights are made once.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAM    := weights/mobile_sam.pt
PORT   ?= 8501
# The address the app listens on: this machine only. `make run APP_ADDRESS=0.0.0.0` opens it to the network
# (then put it behind HTTPS, and create the first admin before: `boneage users add NAME --role admin`).
APP_ADDRESS ?= 127.0.0.1

.PHONY: run dicom-node test setup weights lint benchmark contact-sheet train localizer crops members stages views-ensemble evaluate-val clean

run: setup
	$(PY) -m streamlit run app/main.py --server.address $(APP_ADDRESS) --server.port $(PORT)

# The DICOM node (docs/DICOM_NODE_README_SNIPPET.md): receives hand films from the PACS, sends SR and SC back.
NODE_CONFIG ?= configs/dicom-node.yaml
dicom-node: setup
	$(PY) -m boneage_core.cli dicom-node --config $(NODE_CONFIG)

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
	$(PY) -m boneage_core.segment.weights

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check boneage_core tests benchmarks app pages

benchmark: setup
	$(PY) benchmarks/bench_segmentation.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_app.py
	$(PY) benchmarks/bench_localizer.py

# The shipped model, rebuilt from ImageNet weights. Run state lives in $(RUNS) (outside the clone, so that an
# interrupted `make train` resumes where it stopped, mid-epoch included). Every choice (best epoch, ensemble
# weights, the intervals' calibration) is made on the tune half of the validation split; the report half is for
# the figures only. About 10 h on 2 CPU cores: the whole-film members (224 px from ImageNet, 10 epochs, ~2 h;
# 299 px warm start, 3 epochs, ~1.5 h; 256 px with the early stages frozen, 6 epochs, ~2 h), every training
# film localized with the shipped localizer (`make crops`, ~35 min), the hand and carpal members (`make members`,
# ~2 h), the hand member's second stage with every layer trained (`make stages`, ~50 min), the ensemble of
# views with its output map and interval (`make views-ensemble`, ~25 min) and the quality gate's network
# (~30 min). The localizer itself is rebuilt by `make localizer` (its SHA-256 is pinned in the crop members'
# configs, which then need the new one).
RUNS   ?= $(HOME)/boneage-runs
export BONEAGE_RUNS := $(RUNS)
IMAGES := ../shared/data/rsna-train/images
TUNE   := configs/splits/rsna-val-tune.csv
REPORT := configs/splits/rsna-val-report.csv
MEMBERS := assets/models/members
train: setup
	$(VENV)/bin/boneage train --config configs/lite0-film-224.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-film-224/best.pt --out assets/models/boneage-lite0-224.pt \
		--val-images $(IMAGES) --val-labels $(TUNE)
	$(VENV)/bin/boneage train --config configs/lite0-film-299-warm.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-film-299-warm/best.pt --out $(MEMBERS)/boneage-lite0-299-warm.pt
	$(VENV)/bin/boneage train --config configs/lite0-film-256-long.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-film-256-long/best.pt \
		--out assets/models/boneage-lite0-256-long.pt
	$(MAKE) crops members stages views-ensemble
	$(VENV)/bin/boneage train-gate --images $(IMAGES) --labels ../shared/data/rsna-train/labels.csv \
		--exclude configs/splits/rsna-val.csv --tune $(TUNE) --report $(REPORT) \
		--out assets/models/boneage-gate.pt --metrics assets/eval/gate/metrics.json

# The hand localizer distilled from SAM (issue 9, docs/MODEL_CARD.md): SAM's masks on the 576 training films
# of configs/splits/localizer-v1-films.csv (about 30 min), distilled in 5 epochs (about 20 min), then `make crops`.
# The shipped one was trained with a 12-epoch schedule cut to 5 at step 80 of 155, so a rebuild differs from it
# a little (and its SHA-256, pinned in configs/lite0-hand-256.yaml and lite0-carpal-224.yaml, changes).
localizer: setup
	$(VENV)/bin/boneage preprocess --images $(IMAGES) --labels configs/splits/localizer-v1-films.csv \
		--out $(RUNS)/localizer-v1/sam --segmenter sam
	$(VENV)/bin/boneage train-localizer --manifest $(RUNS)/localizer-v1/sam/manifest.csv \
		--out $(RUNS)/localizer-v1/run --epochs 5 --export assets/models/hand-localizer.pt
	$(MAKE) crops

# Every training film localized with the shipped localizer: boxes and 64 px masks (committed in
# assets/localize/), and the hand and carpal crops the crop members train on, in $(RUNS) (about 40 min on 2
# cores; 0.17 s a film).
crops: setup
	$(VENV)/bin/boneage localize --images $(IMAGES) --labels ../shared/data/rsna-train/labels.csv \
		--out $(RUNS)/localize/rsna-train-boxes.csv --masks $(RUNS)/localize/rsna-train-masks64.npz \
		--crops $(RUNS)/hand-crops --carpal-crops $(RUNS)/carpal-crops
	mkdir -p assets/localize
	cp $(RUNS)/localize/rsna-train-boxes.csv $(RUNS)/localize/rsna-train-masks64.npz assets/localize/

# The region members of the ensemble of views (issue 9, docs/TRAINING.md), after `make crops`: the hand-crop
# member (256 px, 6 epochs, about 1.2 h on 2 cores) and the carpal member (224 px, 6 epochs, about 1 h), both
# warm-started from the 224 px whole-film model, the best epoch chosen on the tune half. Resumable. Each is
# exported (half precision) into assets/models/members/ as soon as it is done, to be committed: run state in
# $(RUNS) does not outlive the machine it was made on.
members: setup
	$(VENV)/bin/boneage train --config configs/lite0-hand-256.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-hand-256/best.pt --out $(MEMBERS)/boneage-lite0-hand-256.pt
	$(VENV)/bin/boneage train --config configs/lite0-carpal-224.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-carpal-224/best.pt \
		--out $(MEMBERS)/boneage-lite0-carpal-224.pt

# Long training in stages (issue 9, docs/TRAINING.md "Long training in stages"): each stage warm-starts from
# the previous stage's committed export, fits one session and is exported into assets/models/members/ when it
# ends, to be committed if it beats the stage before on the tune half. Resumable within a session. The hand
# member's second stage trains every layer (configs/lite0-hand-256-stage2.yaml; it needs `make crops`). The
# 256 px film member's second stage on the frozen recipe (configs/lite0-film-256-stage2.yaml, 2026-12-03:
# best 6.81 against 6.79) was not committed, nor the hand member's third stage at 299 px
# (configs/lite0-hand-299-stage3.yaml, 2026-12-04: 6.61 against 6.65 with the mirror view, but 6.51 against
# 6.31 alone with the shipped four views, and no gain in any ensemble on the tune half).
stages: setup
	$(VENV)/bin/boneage train --config configs/lite0-hand-256-stage2.yaml --resume
	$(VENV)/bin/boneage export --checkpoint $(RUNS)/lite0-hand-256-stage2/best.pt \
		--out $(MEMBERS)/boneage-lite0-hand-256-stage2.pt

# The shipped model, the ensemble of views (issue 9), from its members' files: of the candidates (the three
# whole-film members, the hand member's second stage, every layer trained: `make stages`, and the carpal
# member), the cheapest subset whose tune MAE is within 0.01 months of the best subset's (fewest input pixels:
# boneage_core/model/subsets.py), weights chosen on the tune half, then an output map above 14 years (one knot
# at 168 months, kept only when its 10-fold cross-validated MAE on the tune half is lower: boneage_core/model/
# output_map.py), its 90 % interval calibrated on the tune half. Then, on the report half: `make evaluate-val`,
# the paired comparison with the previous shipped models (0.5.0, 0.4.0 and 0.3.0, docs/eval/), the ensemble
# without its map (the map's ablation), and the share of each member's Grad-CAM heat inside the hand mask on
# the 32 full-resolution films. About 25 min (the candidates' tune estimates are most of it; they are kept in
# assets/eval/views-ensemble-tune/members.csv).
VIEWS_VERSION := 0.6.0+lite0-views-film256-hand256-geo4-map168
VIEW_MEMBERS ?= $(MEMBERS)/boneage-lite0-299-warm.pt assets/models/boneage-lite0-256-long.pt \
	assets/models/boneage-lite0-224.pt $(MEMBERS)/boneage-lite0-hand-256-stage2.pt $(MEMBERS)/boneage-lite0-carpal-224.pt
REPORT_EVAL := assets/eval/views-ensemble-report
views-ensemble: setup
	$(VENV)/bin/boneage ensemble $(VIEW_MEMBERS) \
		--version $(VIEWS_VERSION) --tta geo4 --tune-images $(IMAGES) --tune-labels $(TUNE) \
		--prune-tolerance 0.01 --output-map-knots 168 --member-predictions assets/eval/views-ensemble-tune/members.csv \
		--out $(RUNS)/views-ensemble.pt
	$(VENV)/bin/boneage calibrate --model $(RUNS)/views-ensemble.pt --images $(IMAGES) --labels $(TUNE) \
		--out assets/models/boneage-lite0-ens.pt --outputs assets/eval/views-ensemble-tune
	$(MAKE) evaluate-val
	mkdir -p $(REPORT_EVAL)
	for old in 0.5.0 0.4.0 0.3.0; do $(VENV)/bin/boneage compare docs/eval/$$old-report/predictions.csv \
		assets/eval/rsna-val-report/predictions.csv --n-boot 2000 > $(REPORT_EVAL)/compare-vs-$$old.json || exit 1; done
	$(VENV)/bin/boneage export --checkpoint assets/models/boneage-lite0-ens.pt --without-output-map \
		--out $(RUNS)/views-ensemble-unmapped.pt
	$(VENV)/bin/boneage evaluate --model $(RUNS)/views-ensemble-unmapped.pt --images $(IMAGES) --labels $(REPORT) \
		--out $(REPORT_EVAL)/unmapped
	$(VENV)/bin/boneage compare $(REPORT_EVAL)/unmapped/predictions.csv assets/eval/rsna-val-report/predictions.csv \
		--n-boot 2000 > $(REPORT_EVAL)/compare-map.json
	$(VENV)/bin/boneage heat-share --images ../shared/data/rsna-fullres --labels ../shared/data/rsna-fullres/labels.csv \
		--out assets/eval/heat-share-fullres.json

# The figures of the README and docs/MODEL_CARD.md: the shipped model on the report half, which no choice saw.
evaluate-val: setup
	$(VENV)/bin/boneage evaluate --images $(IMAGES) --labels $(REPORT) --out out/eval-report
	mkdir -p assets/eval/rsna-val-report
	cp out/eval-report/metrics.json out/eval-report/predictions.csv assets/eval/rsna-val-report/

# The contact sheet of the README: all full-resolution films of ../shared/data, overlays in one PNG.
contact-sheet: setup
	$(PY) -m boneage_core.cli preprocess --images ../shared/data/rsna-fullres --out out/fullres \
		--labels ../shared/data/rsna-fullres/labels.csv
	$(PY) -m boneage_core.cli contact-sheet --manifest out/fullres/manifest.csv --out out/fullres/contact_sheet.png

clean:
	rm -rf $(VENV) weights out .pytest_cache .ruff_cache
