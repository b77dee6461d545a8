# The few entry points of the toolkit. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
# sslyze needs cryptography<47, which the toolkit's own venv cannot have (see requirements-sslyze.lock).
SSLYZE_VENV := .venv-sslyze
# Molecule and the tests call ansible-* and molecule from the venv; the nginx tests read SSLYZE.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SSLYZE := $(CURDIR)/$(SSLYZE_VENV)/bin/sslyze

.PHONY: help setup testbed promtool images demo sandbox-destroy test test-fullstack lint molecule bench lock

help: ## list the entry points
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(SSLYZE_VENV)/.installed testbed promtool ## controller venvs, Docker engine, the Debian base images, promtool

$(VENV)/.installed: requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --requirement requirements.lock
	touch $@

$(SSLYZE_VENV)/.installed: requirements-sslyze.lock
	python3 -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install --quiet --requirement requirements-sslyze.lock
	touch $@

testbed: ## start (installing if needed) the Docker engine; build missing base images
	scripts/testbed.sh all

promtool: ## promtool for the alert-rule tests, extracted from Debian's prometheus package into .build/bin
	scripts/promtool.sh

images: ## rebuild the Debian 12 and 13 base images even if present
	scripts/testbed.sh images --rebuild

demo: setup ## the whole stack on local containers (the local sandbox), answering on https://127.0.0.1:8443
	ansible-playbook playbooks/sandbox.yml

sandbox-destroy: ## remove the local sandbox's containers
	ansible-playbook playbooks/sandbox-destroy.yml

test: setup ## every test: lint, toolkit tests, service tests, every Molecule scenario, the full stack
	scripts/test.sh

test-fullstack: setup ## only the multi-host scenario (molecule/fullstack); make test runs it too
	scripts/test.sh fullstack

lint: $(VENV)/.installed ## yamllint, ansible-lint (production profile), ruff
	scripts/test.sh lint

molecule: setup ## one role's scenario while developing: make molecule ROLE=redis [CMD=converge]
	cd roles/$(ROLE) && molecule $(or $(CMD),test)

bench: setup ## benchmarks (on demand; they write their reports under bench/)
	@ls bench/*/run.sh 2>/dev/null | while read -r b; do echo "== $$b"; bash "$$b" || exit 1; done

lock: ## re-pin requirements.lock from the direct pins in pyproject.toml
	rm -rf .build/lock-venv && python3 -m venv .build/lock-venv
	.build/lock-venv/bin/pip install --quiet $$(python3 -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))")
	{ echo "# What CI installs into .venv (make setup). Regenerate with: make lock"; .build/lock-venv/bin/pip freeze; } > requirements.lock
	rm -rf .build/lock-venv && python3 -m venv .build/lock-venv
	.build/lock-venv/bin/pip install --quiet $$(grep -o '^sslyze==.*' requirements-sslyze.lock)
	{ sed -n '1,3p' requirements-sslyze.lock; .build/lock-venv/bin/pip freeze; } > requirements-sslyze.lock.new
	mv requirements-sslyze.lock.new requirements-sslyze.lock
	rm -rf .build/lock-venv
