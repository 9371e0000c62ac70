# The two commands of the README:
#   make demo   set up .venv, register the demo zoo in a local registry, run the gateway
#   make test   set up .venv, lint and type-check, install prometheus if missing, run the suite
.PHONY: setup demo test lint

setup:
	@./scripts/setup.sh

demo: setup
	@./scripts/demo.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: lint
	@./scripts/test-deps.sh
	.venv/bin/python -m pytest
