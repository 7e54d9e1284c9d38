# The suite's two entry points (see README.md):
#   make reproduce   install into .venv, then run the whole study on the embedded default
#                    (synthetic phantom + LiteMedSAM, quick preset) and write results/REPORT.md
#   make test        install into .venv, then run the tests
# The real study: make reproduce DATA=path/to/BTCV MODEL=vit_h PRESET=paper
# Fast paths (docs/speed-and-memory.md): PRECISION=bf16 (decoder), ENCODER_PRECISION=bf16 or fp16 (GPU)
# Several GPUs: make reproduce GPUS=4 (or NPROC=4): each task stage launched with torchrun on 4 ranks

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
MODEL ?= lite_medsam
CHECKPOINT ?=
PRESET ?= quick
DEVICE ?= auto
SEED ?= 0
PRECISION ?= fp32
ENCODER_PRECISION ?= fp32
PYTEST_ARGS ?= -q
GPUS ?= 1
NPROC ?= $(GPUS)

.PHONY: reproduce test report bench clean-results

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

reproduce: $(VENV)/.installed
	$(PY) run_study.py --model $(MODEL) --preset $(PRESET) --device $(DEVICE) --seed $(SEED) \
		--precision $(PRECISION) --encoder-precision $(ENCODER_PRECISION) \
		$(if $(DATA),--data-root $(DATA),--phantom) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),) \
		--nproc $(NPROC)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

report: $(VENV)/.installed
	$(PY) make_report.py

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

clean-results:
	rm -rf results/preprocess results/task1 results/task2 results/task3 results/task3d results/task3d_finetuned results/task3d_propagation \
		results/interactive results/interactive_finetuned results/interactive_trained results/interactive_training \
		results/interactive_compared results/task1_trained results/REPORT.md results/study.json
