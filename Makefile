# The two commands of the README: `make up` (a single-node cluster) and `make test`.
VENV := .venv
DATA_DIR ?= $(if $(filter 0,$(shell id -u)),/var/lib/dockyard,$(HOME)/.local/share/dockyard)
PYTEST_ARGS ?=

.PHONY: setup up test lint bench-api bench-scheduler bench-podstart bench-network bench-swarm clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

up: setup
	$(VENV)/bin/dockyard up --data-dir $(DATA_DIR)

test: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check dockyard tests bench tools

bench-api: setup
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(VENV)/bin/python bench/api.py

bench-scheduler: setup
	$(VENV)/bin/python bench/scheduler.py

# The benchmark starts its own dockerd (no iptables, no forwarding) for the baseline.
bench-podstart: setup
	bash scripts/install-docker.sh
	$(VENV)/bin/python bench/podstart.py

bench-network: setup
	command -v dnsperf >/dev/null || apt-get install -y -qq dnsperf
	command -v dnsmasq >/dev/null || apt-get install -y -qq dnsmasq-base
	$(VENV)/bin/python bench/network.py

# Beside Docker Swarm in its own dockerd (no iptables, no forwarding, swarm on loopback).
bench-swarm: setup
	bash scripts/install-docker.sh
	$(VENV)/bin/python bench/swarm.py

clean:
	rm -rf $(VENV) .pytest_cache
