# Two commands on a fresh machine: `make demo` and `make test`.
# Everything runs in .venv, which the first target that needs it creates.

SHELL := /bin/bash
PYTHON ?= python3
# The demo's server uses TensorFlow Serving's REST and gRPC ports unless told otherwise.
DEMO_PORT ?= 8501
DEMO_GRPC_PORT ?= 8500
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP := $(VENV)/.test-installed
MODEL := code/cnnModel.h5
# What the model is made from: the data, the pinned libraries, the trainer and
# the package modules that shape the model and its metrics. The trainer's
# figure, argument, clean-up and Ctrl-C helpers (figures.py, cli.py,
# leftovers.py, interrupts.py) change no weight, so editing them does not cost
# a training run (tests/test_makefile.py keeps this list in step with the
# trainer's imports).
TRAINING_SOURCES := data/mnist.npz requirements.txt code/model_trainer.py \
	$(addprefix code/mnist_serving/,__init__.py calibration.py config.py data.py \
		distributed.py model.py training.py)

.PHONY: help venv demo test lint fonts train export serve web classify clean

help:
	@echo "make venv      .venv with requirements.txt installed (then: source .venv/bin/activate)"
	@echo "make demo      train (unless code/cnnModel.h5 is up to date), export, serve locally"
	@echo "               and classify test_images/"
	@echo "make test      the whole test suite"
	@echo "make train     code/model_trainer.py (5 epochs), even if the model is up to date"
	@echo "make export    code/export_model.py (next version of my_digit_classifier/)"
	@echo "make serve     code/model_server.py in the foreground (Ctrl-C stops it)"
	@echo "make web       the drawing page and model_server.py (Ctrl-C stops both)"
	@echo "make classify  code/serving_request.py on test_images/ (needs a server)"
	@echo "make lint      ruff check and ruff format --check on code/, tests/ and bench/"
	@echo "make fonts     the handwriting fonts of bench/photo_bench.py (Debian packages, as root)"
	@echo "make clean     remove .venv, the trained model and its exports"

$(RUNTIME_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(RUNTIME_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check code tests bench
	$(BIN)/ruff format --check code tests bench

# The Debian packages of bench/handwriting_fonts.txt; apt-get runs only when
# one of its font files is missing.
FONT_LIST := bench/handwriting_fonts.txt
FONT_PACKAGES = $(shell awk '!/^\#/ && NF {print $$1}' $(FONT_LIST) | sort -u)
FONT_FILES = $(shell awk '!/^\#/ && NF {print $$2}' $(FONT_LIST))
fonts:
	@if ls $(FONT_FILES) > /dev/null 2>&1; then \
		echo "handwriting fonts: installed"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(FONT_PACKAGES); \
	fi

train: $(RUNTIME_STAMP)
	$(BIN)/python code/model_trainer.py

# The venv is order-only: re-creating it does not make the model out of date
# (requirements.txt, which says what goes in it, does).
$(MODEL): $(TRAINING_SOURCES) | $(RUNTIME_STAMP)
	$(BIN)/python code/model_trainer.py

export: $(RUNTIME_STAMP)
	$(BIN)/python code/export_model.py

serve: $(RUNTIME_STAMP)
	$(BIN)/python code/model_server.py

# The drawing page (web/) on http://localhost:8000/ with model_server.py
# (CORS on) on 8501; code/web_demo.py --help for other ports or a Docker server.
web: $(RUNTIME_STAMP)
	$(BIN)/python code/web_demo.py

classify: $(RUNTIME_STAMP)
	cd code && ../$(BIN)/python serving_request.py -i ../test_images

# Train if the model is missing or out of date, export, start model_server.py
# in the background, wait until it listens and the model is AVAILABLE, run the
# original document's commands (and one over gRPC), and stop the server
# whatever happens.
demo: $(RUNTIME_STAMP) $(MODEL)
	$(BIN)/python code/export_model.py
	@set -euo pipefail; \
	$(BIN)/python code/model_server.py --rest_api_port=$(DEMO_PORT) --port=$(DEMO_GRPC_PORT) & server=$$!; \
	trap 'kill -TERM $$server 2>/dev/null; wait $$server 2>/dev/null || true' EXIT; \
	echo "Waiting for model_server.py (pid $$server) to serve on port $(DEMO_PORT)..."; \
	until (exec 3<>/dev/tcp/127.0.0.1/$(DEMO_PORT)) 2>/dev/null; do \
		kill -0 $$server 2>/dev/null || { echo "model_server.py stopped: see its log above"; exit 1; }; \
		sleep 0.5; \
	done; \
	cd code; \
	client="../$(BIN)/python serving_request.py --server http://localhost:$(DEMO_PORT)"; \
	$$client -i ../test_images/image_7.png --wait 120 > /dev/null; \
	echo; echo '$$ python serving_request.py -i ../test_images/image_7.png -d True'; \
	$$client -i ../test_images/image_7.png -d True; \
	echo; echo '$$ python serving_request.py -i ../test_images -d False'; \
	$$client -i ../test_images -d False; \
	echo; echo '$$ python serving_request.py -i ../test_images/image_2.png -d True -p True'; \
	$$client -i ../test_images/image_2.png -d True -p True; \
	echo; echo '$$ python serving_request.py -i ../test_images -d False --protocol grpc'; \
	../$(BIN)/python serving_request.py --protocol grpc --server localhost:$(DEMO_GRPC_PORT) \
		-i ../test_images -d False

clean:
	rm -rf $(VENV) code/cnnModel.h5 code/cnnModel.metrics.json
	find my_digit_classifier -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
