# Kiln — two commands do everything on a fresh machine with only the OS Python:
#   make demo   creates .venv, installs Kiln, runs the bundled example end to end
#   make test   creates/updates .venv with the test tools and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck unit integration bench clean venv corpus graphviz postgres reports chromium bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Installs the package (editable) and registers this venv's kernels inside the venv, so runs
# use this environment's ipykernel, never a kernel left on the machine.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[demo]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-demo
	$(PIP) install -e '.[test]'
	$(BIN)/python -m bash_kernel.install --sys-prefix >/dev/null
	touch $@

venv: $(VENV)/.installed-test

# Byte-compiles Kiln's sources, as pip does for an installed wheel: an editable install only
# writes .pyc files on import, and not at all under PYTHONDONTWRITEBYTECODE, so every command
# would compile ~70 modules (~0.1 s) before it starts. Stale files are recompiled; fast when
# nothing changed.
bytecode: $(VENV)/.installed-demo
	@$(BIN)/python -m compileall -q src >/dev/null

demo: $(VENV)/.installed-demo bytecode
	$(BIN)/python examples/run_demo.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# The peers' test notebooks, fetched once from PyPI and cached. get.sh runs from an empty
# folder: its include globs are unquoted and would expand against our own tests/ folder.
corpus: $(VENV)/.installed-test
	@KILN_CORPUS=$${KILN_CORPUS:-$$HOME/.cache/kiln/corpus}; GET="$(CURDIR)/../shared/corpus/get.sh"; \
	  if [ ! -f "$$KILN_CORPUS/INDEX.tsv" ] && [ -f "$$GET" ]; then \
	    mkdir -p "$$KILN_CORPUS"; KILN_CORPUS="$$(cd "$$KILN_CORPUS" && pwd)"; \
	    ( cd "$$(mktemp -d)" && EXTRAS=$${EXTRAS:-0} PYTHON="$(CURDIR)/$(BIN)/python" \
	        bash "$$GET" "$$KILN_CORPUS" ) \
	      || echo "corpus: download failed; corpus tests will be skipped"; \
	  fi

# PDF reports print through WeasyPrint on the system's Pango (Debian's libpango); the tests
# look at the PDFs with poppler's pdftotext and pdftoppm
reports:
	@missing=""; command -v pdftoppm >/dev/null 2>&1 || missing="poppler-utils"; \
	  ldconfig -p 2>/dev/null | grep -q libpangoft2-1.0 || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "reports: installing$$missing"; \
	      ( apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	            --no-install-recommends $$missing >/dev/null; } ) \
	        || echo "reports: the install failed; the PDF tests will not pass"; \
	    else echo "reports: missing$$missing (needs root and apt-get)"; fi; \
	  fi

# kiln dag draws with Graphviz's dot (Debian's graphviz); the tests draw SVG and PNG
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing Graphviz (dot) for kiln dag"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y graphviz >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y graphviz >/dev/null; }; \
	  else sudo apt-get install -y graphviz >/dev/null; fi; } || \
	  echo "graphviz: could not install dot; kiln dag falls back to Mermaid text"

# The web UI's browser tests drive Debian's chromium through Playwright (playwright install
# cannot download browsers here); installed when missing. Under CI the tests fail without it.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium for the web UI's browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y chromium >/dev/null; }; \
	  else sudo apt-get install -y chromium >/dev/null; fi; } || \
	  echo "chromium: could not install it; the browser tests will skip (and fail under CI)"

# PostgreSQL's programs for the store and queue tests, which start a throwaway server of their
# own (initdb + pg_ctl in a temporary folder; nothing runs as a service). Installed from the
# distribution's packages when missing and we are root with apt; otherwise those tests skip
# and say why (under CI they fail instead: they must run there).
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "postgres: installing PostgreSQL for the tests (apt-get install postgresql)"; \
	    ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends postgresql >/dev/null ) \
	      || echo "postgres: the install failed; the PostgreSQL tests will not run"; \
	  else \
	    echo "postgres: no initdb and no way to install it (needs root and apt-get); the PostgreSQL tests will skip"; \
	  fi; \
	fi

# --dist loadgroup: the tests of one orchestrator (Airflow, Prefect; xdist_group) share one
# worker, which runs their scenarios once; the other tests are shared out as usual. Their
# venvs are built by the tests on first use and cached in ~/.cache/kiln.
test: $(VENV)/.installed-test bytecode graphviz postgres reports chromium corpus lint typecheck
	KILN_CORPUS=$${KILN_CORPUS:-$$HOME/.cache/kiln/corpus} $(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: $(VENV)/.installed-test bytecode
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) .kiln .pytest_cache .mypy_cache .ruff_cache examples/output
