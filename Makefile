# Signalbox developer entry points. `make run` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-12)
PROTOS := $(wildcard protos/*.proto)
PB     := services/common/pb
PB_OUT := $(patsubst protos/%.proto,$(PB)/%_pb2.py,$(PROTOS))

.PHONY: setup protos run stack test test-fast bench lint fmt clean

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # the CPU build; any other torch pulls CUDA
	$(BIN)/pip install --quiet -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

protos: $(PB_OUT)

$(PB_OUT) &: $(PROTOS) | $(STAMP)
	$(PY) -m grpc_tools.protoc -I$(PB)=protos \
	  -I$$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))') \
	  --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

run: setup protos
	$(PY) -m deploy.local.stack

# The compose topology as local processes: nginx :8080 -> two edges -> router/keys/analytics,
# on the local Postgres and Redis (README "Deploy"). Flags: make stack STACK_ARGS="--port 9080"
stack: setup protos
	$(PY) -m deploy.local.topology $(STACK_ARGS)

test: setup protos
	$(PY) -m pytest

test-fast: setup protos
	$(PY) -m pytest -m "not e2e" -x -q

bench: setup protos
	$(PY) -m bench

lint: setup protos
	$(BIN)/ruff check services tests bench deploy
	$(BIN)/ruff format --check services tests bench deploy

fmt: setup
	$(BIN)/ruff format services tests bench deploy
	$(BIN)/ruff check --fix services tests bench deploy

clean:
	rm -rf $(VENV) $(PB)/*_pb2*.py $(PB)/*_pb2*.pyi .pytest_cache .ruff_cache
