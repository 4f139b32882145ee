# Quick start: `make demo` (the main job) and `make test` (the tests); each builds .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INSTALLED := $(VENV)/.installed
PEERS := $(VENV)/.peers

.PHONY: demo test bench conform peers lint clean

$(INSTALLED): setup.py
	python3 -m venv $(VENV)
	$(PIP) install --quiet -e '.[test]'
	touch $@

# SpikingJelly and Norse declare torchvision (and torchaudio) as requirements, and PyPI's
# torchvision does not import beside torch 2.13.0: install them without their declared dependencies,
# then the dependencies they really import. torch stays pinned throughout.
$(PEERS): $(INSTALLED)
	$(PIP) install --quiet snntorch 'torch==2.13.0'
	$(PIP) install --quiet --no-deps spikingjelly norse nirtorch
	$(PIP) install --quiet loguru h5py scipy packaging 'torch==2.13.0'
	touch $@

demo: $(PEERS)
	$(VENV)/bin/neuro-emu demo

test: $(INSTALLED)
	$(PY) -m pytest

bench: $(PEERS)
	$(VENV)/bin/neuro-emu bench --suite neurons

conform: $(INSTALLED)
	$(VENV)/bin/neuro-emu conform

peers: $(PEERS)

lint: $(INSTALLED)
	$(PIP) install --quiet ruff
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
