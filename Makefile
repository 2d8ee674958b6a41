# Two commands do everything on a fresh machine with Python 3.11:
#   make run    create .venv, install, write the demo dataset and train the demo model if absent
#               (about 2 minutes on 2 cores, once), start the dashboard
#   make test   install the test tools and the optional extras (Ray, export), run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
# The dashboard answers this machine only; serving to a network is explicit:
# make run ADDRESS=0.0.0.0 only with sign-in or BCP_MODE=demo (SECURITY.md); local mode refuses it.
ADDRESS ?= 127.0.0.1
DEMO   ?= demo_data
BUNDLES ?= bundles

.PHONY: run test install install-dev demo demo-bundle lint bench clean

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -m venv $(VENV) || { echo "Could not create a virtual environment with $(PYTHON). On Debian/Ubuntu install it with: sudo apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-scale.txt requirements-export.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt -r requirements-scale.txt -r requirements-export.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(DEMO)/demo_ground_truth.json: | $(VENV)/.installed
	$(PY) -m bcp_core demo-data --out $(DEMO) --scale small

demo: $(DEMO)/demo_ground_truth.json

# The demo model: trained on the demo dataset, reproducibly (fixed seed), so that prediction works
# on first start without downloading anything. A quick preset, not a model's recipe (those were
# chosen on real films): the compact CNN at 320 x 256 (the synthetic demo's small lesions want
# it) for up to 15 epochs keeps the first start at about 2 minutes on 2 cores.
DEMO_PRESET ?= --model default_cnn --image-size 320 256 --epochs 15 --patience 6
$(BUNDLES)/demo/bundle.json: | $(DEMO)/demo_ground_truth.json
	$(PY) -m bcp_core train --data-root $(DEMO) --out $(BUNDLES)/demo $(DEMO_PRESET) --seed 42

demo-bundle: $(BUNDLES)/demo/bundle.json

run: install demo demo-bundle
	BCP_DATA_ROOT="$${BCP_DATA_ROOT:-$(abspath $(DEMO))}" BCP_BUNDLES_DIR="$(abspath $(BUNDLES))" \
		$(PY) -m streamlit run serve.py --server.port $(PORT) --server.address $(ADDRESS)

# The suite runs in TEST_WORKERS processes, each test file whole in one of them (its module
# fixtures, such as the Ray cluster, start once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# Lint, format check and the type checker (mypy over bcp_core, bcp_demo and dashboard: the typed
# contracts and every module that reads them). CI runs it before the tests.
lint: install-dev
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

bench: install
	$(PY) bench/bench_ingest.py

clean:
	rm -rf $(VENV) $(DEMO) $(BUNDLES) .pytest_cache test-artifacts
