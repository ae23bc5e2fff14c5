# `make demo` and `make test` set everything up on a fresh clone (see README).
.PHONY: setup demo test test-all bench
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints/cpu.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/malenia demo --out malenia-demo --overwrite

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q Testing

# Opt-in slow tests (longer training runs); the built-in model's accuracy checks run in `test` too.
test-all: $(STAMP)
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m "" Testing
