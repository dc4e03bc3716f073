# Spark Control: `make run` (set up + serve on the embedded default), `make test` (set up + every check and test).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)
	@# The project's bytecode, written once here rather than compiled from source by every start.
	$(BIN)/python -m compileall -q -x '/(\.venv|tests|data|node_modules|\.git)/' .

run: setup
	$(BIN)/python manage.py serve

demo: setup
	$(BIN)/python manage.py serve --demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

test: setup
	bash scripts/test

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
