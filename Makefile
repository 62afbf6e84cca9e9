# The few verbs a newcomer needs. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_VERBOSITY := -1
export CHECKPOINT_DISABLE := 1
export DISABLE_VERSION_CHECK := 1
export CDKTF_DISABLE_PLUGIN_CACHE_ENV := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export TF_IN_AUTOMATION := 1
export TF_CLI_CONFIG_FILE := $(CURDIR)/.terraformrc.generated

PY := .venv/bin/python
# Where cdktf synthesizes (its --output); the integration tests give a folder of their own.
CDKTF_OUT ?= cdktf.out
# The backend (where state lives) follows Target and IOT_SANDBOX_DIR; forget the previous init's
# backend so switching never stops at "Backend configuration changed" (state itself is untouched).
FORGET_BACKEND := rm -f $(CDKTF_OUT)/stacks/*/.terraform/terraform.tfstate
STACK_DIR = $(shell ls -d $(CDKTF_OUT)/stacks/* 2>/dev/null | head -1)
# Deploy = synth, then Terraform itself on the synthesized stack, with Ctrl-C reaching Terraform alone
# (so it records what it created), and one round adopting what an interrupted deploy left unrecorded
# (scripts/deploy.py says how and why that is safe).
# ADOPT=1: adopt any object under the stack's names, not only what an unfinished deploy here left (docs/aws.md)
APPLY = $(PY) -m scripts.deploy apply --out $(CDKTF_OUT) $(if $(ADOPT),--adopt)
# Target from the environment (Target=aws make deploy), else cdktf.json's context.
TARGET = $(or $(Target),$(shell python3 -c 'import json; print(json.load(open("cdktf.json"))["context"]["Target"])'))

.PHONY: help setup system-packages synth test unit infra integration lint scan validate clean demo bench bench-fleet deploy destroy verify outputs \
	sandbox-up sandbox-down sandbox-status

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: system-packages .venv/.synced node_modules/.installed .terraformrc.generated ## install everything (idempotent)
	@$(PY) -m sandbox build

# Debian packages the sandbox builds and runs with, checked by their files at every setup (a stamp
# would hide a package removed since); as root it installs what is missing, else prints the command.
system-packages:
	@bash scripts/system-packages.sh

# The lock's packages, then this project editable (pyproject.toml): `fleet`, `iot-sandbox` and the
# project's packages import from the tree. --no-deps: the lock alone decides versions; no build
# isolation: the venv's own setuptools builds it, with nothing fetched.
.venv/.synced: Pipfile.lock pyproject.toml
	@command -v pipenv >/dev/null || python3 -m pip install --quiet pipenv
	pipenv sync --dev
	.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	@touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

.terraformrc.generated: scripts/terraform-cli-config.sh
	@bash scripts/terraform-cli-config.sh $@ >/dev/null

synth: setup ## synthesize cdktf.out/stacks/<stack>/cdk.tf.json
	$(PY) main.py
	@echo "synthesized: $$(ls cdktf.out/stacks/*/cdk.tf.json)"

validate: synth ## terraform init (offline mirror) + validate on the synthesized stack
	cd $(STACK_DIR) && terraform init -backend=false -input=false >/dev/null && terraform validate

lint: setup ## ruff (lint + format check) and mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

scan: synth ## checkov on the synthesized JSON; failures must be acknowledged on their resource
	$(PY) scripts/checkov_scan.py $(STACK_DIR)/cdk.tf.json

unit: setup ## fast tests: pure logic and Lambda code (moto in-process, no cdktf)
	$(PY) -m pytest tests/unit -q

infra: setup ## one synth: template, wiring, outputs, terraform validate, checkov (tests marked infra)
	$(PY) -m pytest -q -m infra

integration: setup ## the sandbox, real terraform and the device SDK (tests marked integration; minutes)
	$(PY) -m pytest -q -m integration

test: setup lint ## everything CI runs: lint, all tests (unit, synth, validate, checkov, sandbox deploy)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15  # two workers; tests/conftest.py keeps each deployment on one

deploy: setup ## synth + terraform apply (Target=sandbox, the default, starts the local sandbox first)
	@if [ "$(TARGET)" = sandbox ]; then $(PY) -m sandbox up; fi
	@$(FORGET_BACKEND)
	@$(APPLY) || { status=$$?; [ $$status = 130 ] || $(MAKE) --no-print-directory _deploy-hint; exit $$status; }

# The stack's devices go first: IoT refuses to delete a device policy still attached to a device's
# certificate, and a thing type still used by things. ALLOW_PROD=1 lets a prod stack's devices go.
destroy: setup ## decommission the stack's devices (scripts/fleet.py), then terraform destroy (sandbox: while it is up)
	@if [ "$(TARGET)" = sandbox ] && ! $(PY) -m sandbox status >/dev/null; then \
		echo "sandbox is down: nothing deployed into it survives; nothing to destroy"; exit 0; fi
	@$(FORGET_BACKEND)
	@$(PY) -m scripts.deploy destroy --out $(CDKTF_OUT) $(if $(ALLOW_PROD),--allow-prod)

verify: setup ## check the deployed stack against the live system (scripts/verify.py)
	@if [ "$(TARGET)" = sandbox ]; then eval "$$($(PY) -m sandbox env)"; fi; $(PY) scripts/verify.py

outputs: ## terraform output of the deployed stack
	@cd $(STACK_DIR) && terraform output

sandbox-up: setup ## start the local sandbox (local AWS on 127.0.0.1)
	@$(PY) -m sandbox up

sandbox-down: ## stop the local sandbox and everything it started
	@$(PY) -m sandbox down

sandbox-status: ## is the sandbox up?
	@$(PY) -m sandbox status

_deploy-hint:
	@echo
	@if [ "$(TARGET)" = sandbox ] && ! status=$$($(PY) -m sandbox status); then \
		echo "deploy failed: the sandbox is not answering: $$(echo "$$status" | head -1 | sed 's/^sandbox: down: //')"; \
		echo "Fix that, then run 'make deploy' again (it starts the sandbox first)."; \
	else echo "deploy failed: see Terraform's error above; 'make deploy' is safe to run again."; fi

demo: setup ## start the sandbox, deploy, provision devices of every type (and refuse some), print the result
	@$(PY) -m sandbox up
	@echo "deploying the stack into the sandbox: synth, terraform plan and apply (about 90 s)..."
	@$(FORGET_BACKEND)
	@(export RequireAttestation=true; $(APPLY) >/dev/null) || { $(MAKE) --no-print-directory _deploy-hint; exit 1; }
	@echo "provisioning devices with the AWS IoT Device SDK v2..."
	@eval "$$($(PY) -m sandbox env)"; $(PY) scripts/demo.py

bench: setup ## benchmarks: synth time/memory; sandbox start, deploy and destroy (medians of 3)
	$(PY) bench/synth.py
	$(PY) bench/sandbox_deploy.py

bench-fleet: deploy ## provisioning throughput: 1,000 devices at concurrency 1, 10, 50, both flows (about 15 min)
	$(PY) bench/fleet_throughput.py

clean: ## remove build outputs (keeps .venv and node_modules)
	rm -rf cdktf.out .pytest_cache .mypy_cache .ruff_cache reports
