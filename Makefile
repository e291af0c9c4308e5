# sslsv-sb: two commands for a fresh machine.
#   make demo   -> venv + install + embedded corpus + SSL training + verification (EER)
#   make test   -> venv + install (with test extras) + pytest (tests + doctests)
#   make demo-dino -> the DINO CPU preset (~25-30 min on 2 cores; recipe README)
#   make test-fast -> the same without the tests marked slow (inner loop)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A known-good torch/torchaudio pair (CUDA build that also runs on CPU). An existing
# torch install in the venv is kept; GPU users may set e.g. TORCH_PACKAGES="torch torchaudio".
TORCH_PACKAGES ?= torch==2.14.1 torchaudio==2.11.0
PYTEST_ARGS ?= -n 2
# Always shown: the 15 slowest tests (keeps `make test` honest about its budget).
PYTEST_REPORT := -q --durations=15
# bf16 autocast is fast only on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere
# it is emulated (~8x slower): `make demo DEMO_PRECISION=fp32` (other numbers than the README's).
DEMO_PRECISION ?= bf16
# Demo budget on 2 CPU cores: ECAPA C=256, 1 s crops, batch 64, bf16 autocast.
DEMO_ARGS ?= --output_folder=results/demo/simclr_ecapa \
	--channels=[256,256,256,256,768] --emb_dim=192 --batch_size=64 \
	--frame_length=16000 --temperature=0.07 --eq_prob=0.5 \
	--number_of_epochs=11 --num_workers=0 --precision=$(DEMO_PRECISION)
# DINO CPU preset (recipe README, "DINO on a CPU"): demo shapes, Adam 1e-3, constant
# teacher momentum 0.99, K = 1024, 40 epochs (880 steps); the teacher is scored.
DINO_ARGS ?= --output_folder=results/demo/dino_ecapa \
	--channels=[256,256,256,256,768] --emb_dim=192 --batch_size=64 \
	--frame_length=16000 --local_length=8000 --precision=$(DEMO_PRECISION) \
	--optimizer_type=adam --lr=0.001 --weight_decay=0 --start_tau=0.99 \
	--tau_scheduler=False --head_out_dim=1024 --number_of_epochs=40 --num_workers=0

.PHONY: install demo demo-dino test test-fast lint clean

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchaudio" 2>/dev/null || \
		$(PY) -m pip install -q $(TORCH_PACKAGES) 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import torch, torchaudio" || (echo "torch/torchaudio install failed" && exit 1)
	@$(PY) -m pip install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import sslsv_sb, speechbrain, pytest" || (echo "install failed" && exit 1)
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) recipes/VoxCeleb/SSL/train.py recipes/VoxCeleb/SSL/hparams/simclr_ecapa.yaml \
		$(DEMO_ARGS)

demo-dino: $(VENV)/.installed
	$(PY) recipes/VoxCeleb/SSL/train.py recipes/VoxCeleb/SSL/hparams/dino_ecapa.yaml \
		$(DINO_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_REPORT) $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_REPORT) -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sslsv_sb recipes tools tests

clean:
	rm -rf results .pytest_cache
