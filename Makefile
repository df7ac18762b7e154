# Two commands on a fresh clone: `make run` (the whole local stack) and `make test` (the whole suite).
.PHONY: run test bootstrap bench lint

run:
	scripts/dev.sh up $(ARGS)

test:
	scripts/dev.sh test

bootstrap:
	scripts/dev.sh bootstrap

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench:
	scripts/dev.sh bootstrap && bench/setup.sh && .venv/bin/python -m bench
