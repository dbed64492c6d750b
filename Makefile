# The two commands of the README: `make demo` and `make test`.
# Both bootstrap first (packages, libvirt daemons, .venv); see scripts/bootstrap.sh.
VENV := .venv
PY := $(VENV)/bin/python
URI ?= qemu:///system

.PHONY: bootstrap demo test lint bench

bootstrap:
	@sh scripts/bootstrap.sh

demo: bootstrap
	@$(VENV)/bin/vshx -c $(URI) lab-create vshx-demo
	@if [ -w /usr/share/bash-completion/completions ]; then \
		$(VENV)/bin/vshx completion bash > /usr/share/bash-completion/completions/vshx; fi
	@$(VENV)/bin/vshx -c $(URI) --tour

test: bootstrap
	@$(PY) -m pytest -q

lint: bootstrap
	@$(VENV)/bin/ruff check vshx plugins tests bench
	@$(VENV)/bin/mypy

bench: bootstrap
	@cd bench && ../$(PY) run_all.py
