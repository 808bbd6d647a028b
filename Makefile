# Two entry points, each from a fresh machine with nothing but Python 3.10+:
#   make demo   builds .venv-demo and runs the main job end to end on a small synthetic dataset
#   make test   builds .venv (with the dev extras), lints and runs the test suite
PYTHON ?= python3
DEMO_VENV ?= .venv-demo
TEST_VENV ?= .venv
DEMO_OUT ?= demo_out

.PHONY: demo test lint clean

demo:
	PYTHON=$(PYTHON) scripts/setup_venv.sh $(DEMO_VENV) synth
	VENV=$(DEMO_VENV) OUT=$(DEMO_OUT) scripts/demo.sh

test:
	PYTHON=$(PYTHON) scripts/setup_venv.sh $(TEST_VENV) dev
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/python -m pytest -q

lint:
	$(TEST_VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
