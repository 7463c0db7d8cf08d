# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
# make test runs the storage tests on PostgreSQL too when this server answers; otherwise it
# skips them with the reason (CI sets CI=true, and then an unreachable server fails the run).
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
PYTEST_ARGS ?=

.PHONY: run test migrate lock bench clean assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The runtime dependencies, exactly as locked.
$(VENV)/.runtime: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Runtime plus the test and benchmark dependencies, exactly as locked.
$(VENV)/.dev: requirements-dev.lock $(VENV)/.runtime
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

# The dashboard's browser libraries, from the npm registry as package-lock.json pins them (no CDN at
# run time). Without npm the dashboard still works: its pages read without JavaScript.
VENDOR := service/ui/static/vendor
$(VENDOR)/MANIFEST.json: package.json package-lock.json | $(BIN)/python
	@if command -v npm >/dev/null; then \
		npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && \
		$(BIN)/python -m service.ui.assets node_modules; \
	else echo "npm not found: the dashboard will serve its pages without charts, diagrams or htmx"; fi

assets: $(VENDOR)/MANIFEST.json

migrate: $(VENV)/.runtime var/personal-data-key
	PERSONAL_DATA_KEY="$${PERSONAL_DATA_KEY:-$$(cat var/personal-data-key)}" $(BIN)/casestudies db upgrade

# The secret that signs dashboard sign-ins, made once and kept (readable by this user only), so that
# a restart does not sign everyone out.
var/session-secret:
	@mkdir -p var && umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(32))" > $@

# The master key of the personal data in the embedded database, made once and kept beside it
# (readable by this user only). Lose it and no personal field can be read again: back it up apart
# from the database. A server of your own takes PERSONAL_DATA_KEY from its environment instead.
var/personal-data-key: | $(VENV)/.runtime
	@mkdir -p var && umask 077 && $(BIN)/casestudies people new-key > $@
	@echo "made $@: the master key of personal data for the embedded database (back it up apart from var/casestudies.db)"

run: migrate assets var/session-secret var/personal-data-key
	SESSION_SECRET="$$(cat var/session-secret)" PERSONAL_DATA_KEY="$${PERSONAL_DATA_KEY:-$$(cat var/personal-data-key)}" \
		$(BIN)/casestudies serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev assets
	$(BIN)/ruff check --quiet service tests bench alembic
	TEST_DATABASE_URL="$(TEST_DATABASE_URL)" $(BIN)/pytest --numprocesses=auto $(PYTEST_ARGS)

bench: $(VENV)/.dev
	bash bench/run.sh

# Re-pin every dependency after editing pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --extra dev -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache node_modules $(VENDOR)
