# The two commands of the README. Both keep their virtual environment in .venv/
# (created when missing, reused when present; reinstalled when pyproject.toml or
# constraints.txt change).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# Pinned CPU torch first: an unpinned 'torch' pulls a multi-GB CUDA build.
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[all,dev]"
	# Type stubs for the static TensorRT API checks; --no-deps because they name the
	# real tensorrt package, which does not install from PyPI alone.
	$(VENV)/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/swiftbrush demo --out out/demo --overwrite

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs

clean:
	rm -rf out .pytest_cache
