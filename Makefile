# `make demo` and `make test` take a fresh Debian machine from nothing to a running example
# project / a full test run: they install the Debian packages and the venv they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := sqlite3 chromium chromium-driver cron openssh-server age zstd time
DEMO_DB := example_project/var/studio.db
SIZE ?= 1G

export SE_OFFLINE := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help system-packages venv lint typecheck package-check test demo bench bench-deps matrix clean

help:
	@echo "make demo   set up and run the example studio project on http://127.0.0.1:8000/admin/"
	@echo "make test   set up and run the whole test suite (lint, types, tests, coverage)"
	@echo "make bench  run the benchmarks (SIZE=100M for a quick run)"
	@echo "make matrix run the tests on every supported Python and Django (tox)"

system-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "Missing Debian packages:" $$missing; \
			echo "Install them with: sudo apt-get install -y" $$missing; exit 1; \
		fi; \
		echo "Installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements/test.txt requirements/lint.txt setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check \
		"Django>=5.2,<5.3" -r requirements/test.txt -r requirements/lint.txt -e .
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy django_studio_backups tests

# The wheel and sdist as PyPI would get them: metadata that renders, a wheel without
# misplaced or duplicate files.
package-check: venv
	rm -rf build/package-check
	$(BIN)/python -m build --no-isolation --outdir build/package-check . >/dev/null
	$(BIN)/twine check --strict build/package-check/*
	$(BIN)/check-wheel-contents build/package-check/*.whl

test: system-packages venv bench-deps lint typecheck package-check
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

demo: venv
	mkdir -p example_project/var
	$(BIN)/python example_project/manage.py migrate --no-input
	@if [ ! -s example_project/var/.seeded ]; then \
		$(BIN)/python example_project/manage.py seed_studio --size 20M && date > example_project/var/.seeded; \
	fi
	$(BIN)/python example_project/manage.py backup_now
	$(BIN)/python example_project/manage.py ensure_demo_user
	$(BIN)/python example_project/manage.py runserver 127.0.0.1:8000

# django-dbbackup (its latest release) is only a competitor in the benchmarks: it goes into its
# own folder, put on PYTHONPATH by bench/, never into the project's dependencies.
DBBACKUP_VERSION := 5.4.0

.venv-dbbackup/.installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --upgrade \
		--target .venv-dbbackup django-dbbackup==$(DBBACKUP_VERSION)
	touch $@

bench-deps: .venv-dbbackup/.installed

bench: system-packages venv bench-deps
	$(BIN)/python -m bench --size $(SIZE)

# The other Pythons and Djangos (tox.ini); pyenv's interpreters are used where present.
PYENV_BINS := $(wildcard $(HOME)/.pyenv/versions/3.1[0-9]*/bin)
matrix: venv
	$(BIN)/python -m pip install -q --disable-pip-version-check "tox>=4.2"
	PATH="$(subst $(eval) ,:,$(PYENV_BINS)):$$PATH" $(BIN)/tox run-parallel -p 2

clean:
	rm -rf $(VENV) .venv-dbbackup build dist *.egg-info .coverage .coverage.* htmlcov .pytest_cache .mypy_cache .ruff_cache
