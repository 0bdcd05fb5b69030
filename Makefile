# Palais — two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := var/demo

.PHONY: run test venv lint typecheck bench bench-quick clean

$(BIN)/palais: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/palais

$(DEMO)/palais.toml: | $(BIN)/palais
	$(BIN)/palais init $(DEMO)

run: $(BIN)/palais $(DEMO)/palais.toml
	@$(BIN)/python -m palais.howto $(DEMO)
	$(BIN)/palais serve $(DEMO)

test: $(BIN)/palais
	$(BIN)/python -m pytest -q

lint: $(BIN)/palais
	$(BIN)/ruff check palais tests bench
	$(BIN)/ruff format --check palais tests bench

# mypy --strict over palais, tests and bench ([tool.mypy] in pyproject.toml).
typecheck: $(BIN)/palais
	$(BIN)/mypy

bench: $(BIN)/palais
	$(BIN)/python -m bench

bench-quick: $(BIN)/palais
	$(BIN)/python -m bench --quick --smoke

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
