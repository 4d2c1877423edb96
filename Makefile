# make reproduce  - set up, then the quick reproduction on synthetic data
# make study      - set up, then the non-IID hospitals study (notebook 05_non_iid)
# make test       - set up, then lint (ruff check, ruff format --check) and the test suite
# make lab        - JupyterLab on the notebooks
# Every target is safe to run twice: setup reinstalls only when a requirements file changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DATA ?= synthetic
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: setup reproduce study test lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name fedlib --display-name "Python (fedlib)" >/dev/null
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

reproduce: setup
	$(BIN)/fedlib reproduce --profile $(PROFILE) --data $(DATA)

study: setup
	$(BIN)/fedlib study --profile $(PROFILE) --data $(DATA)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n auto --durations=25

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs reports/tmp data
