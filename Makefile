# The two commands of the README: `make demo` and `make test` (both bootstrap first: packages,
# libvirt daemons, .venv; see scripts/bootstrap.sh). `make quick` and `make lint` need only the
# .venv: no root, no libvirtd, no virsh.
VENV := .venv
PY := $(VENV)/bin/python
URI ?= qemu:///system
# pytest exits 5 when it ran no test at all: that is never a pass
PYTEST = $(PY) -m pytest
NONE_RAN = rc=$$?; [ $$rc -ne 5 ] || { echo "make: pytest ran no test" >&2; rc=1; }; exit $$rc

.PHONY: bootstrap demo test test-differential quick test-anywhere lint bench

bootstrap:
	@sh scripts/bootstrap.sh

$(PY):
	@sh scripts/bootstrap.sh --venv-only

demo: bootstrap
	@# the demo lab is the invoking user's own (vshx-demo, or vshx-demo-USER under sudo or for
	@# another user): lab-create refuses to rebuild a lab someone else made
	@$(VENV)/bin/vshx -c $(URI) lab-create "$$($(PY) -c 'from vshx.spec.user import demo_name; print(demo_name())')"
	@if [ -w /usr/share/bash-completion/completions ]; then \
		$(VENV)/bin/vshx completion bash > /usr/share/bash-completion/completions/vshx; fi
	@# `vshx` on PATH, as the README's examples write it (only where nothing of that name is)
	@if [ -w /usr/local/bin ] && [ ! -e /usr/local/bin/vshx ] && [ ! -L /usr/local/bin/vshx ]; then \
		ln -s "$(CURDIR)/$(VENV)/bin/vshx" /usr/local/bin/vshx; fi
	@$(VENV)/bin/vshx -c $(URI) --tour

# every tier; the integration tier runs on VSHX_TEST_URI (default qemu:///system). Labs are
# independent, so the tests run JOBS at a time; those that stop or kill the shared libvirtd
# (marked serial) run alone afterwards; as root, the unit tier then runs once more as a user
# who is not root and has no virsh (test-anywhere)
JOBS ?= 4
# the differential suite runs every tp-libvirt variant in its script's domain state and ten
# representatives in all three (tests/test_differential_tp.py); DIFF_SLICE=0..5 adds a sixth of
# the other (variant, state) runs, so six runs with DIFF_SLICE=0..5 cover the whole matrix, as
# `make test-differential` does at once
DIFF_SLICE ?=
test: bootstrap
	@echo "differential: domain-state slice '$(DIFF_SLICE)' (none unless DIFF_SLICE=0..5)"
	@VSHX_DIFF_SLICE=$(DIFF_SLICE) $(PYTEST) -q -n $(JOBS) -m "not serial" --durations=40; $(NONE_RAN)
	@$(PYTEST) -q -m serial; $(NONE_RAN)
	@# the unit tier again as a user who is not root, with no virsh (what test-anywhere runs)
	@if [ "$$(id -u)" = 0 ]; then PY=$(abspath $(PY)) sh scripts/test_anywhere.sh; fi

# the whole differential matrix: every tp-libvirt variant running, paused and transient (377
# runs of two labs each, ~31 min on one worker; `make test` runs 151 of them)
test-differential: bootstrap
	@VSHX_DIFF_STATES=all $(PYTEST) -q -n $(JOBS) -m differential; $(NONE_RAN)

# the unit tier: no root, no libvirtd, no virsh needed
quick: $(PY)
	@$(PYTEST) -q -m "not libvirt"; $(NONE_RAN)

# the unit tier as a throwaway user who is not root, with no virsh on PATH (run as root)
test-anywhere: $(PY)
	@PY=$(abspath $(PY)) sh scripts/test_anywhere.sh

lint: $(PY)
	@$(VENV)/bin/ruff check vshx plugins tests bench
	@$(VENV)/bin/ruff format --check vshx plugins tests bench
	@$(VENV)/bin/mypy

bench: bootstrap
	@cd bench && ../$(PY) run_all.py
