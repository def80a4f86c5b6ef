# tenure: `make demo` runs the demo on the embedded PostgreSQL, `make test` runs the suite,
# `make chaos` runs the long randomized fault campaign (CHAOS_ARGS="--seed 42" to replay one).
# Each target bootstraps .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The demo needs tenure and the document parsers only, not the test and lint tools.
DEMO_STAMP := $(VENV)/.demo-stamp

.PHONY: demo test chaos lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[documents]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

# One tier of the suite alone, by what its tests need: test-unit (no database, seconds),
# test-database (a real PostgreSQL), test-processes (real worker processes), test-faults.
.PHONY: test-unit test-database test-processes test-faults
test-unit test-database test-processes test-faults: $(STAMP)
	$(PY) -m pytest -q -m $(@:test-%=%)

chaos: $(STAMP)
	$(PY) -m chaos $(CHAOS_ARGS)

# Rolling upgrades and rollbacks under a stream: the previous release's workers (its
# source from history, its own virtualenv) and this code's, each replaced by the other
# release many times (UPGRADE_ARGS="--rounds 3 --dsn postgresql://..." to change it).
.PHONY: chaos-upgrade
chaos-upgrade: $(STAMP)
	$(PY) -m chaos.upgrade --rounds 10 --workers 3 $(UPGRADE_ARGS)

# Schedules under five workers SIGKILLed and SIGSTOPped at random: 10 minutes with a
# fresh seed (the suite runs 3 minutes of a fixed one); every tick sent once, none late.
.PHONY: chaos-schedules
chaos-schedules: $(STAMP)
	TENURE_SCHEDULE_CHAOS_SECONDS=$${TENURE_SCHEDULE_CHAOS_SECONDS:-600} \
	TENURE_SCHEDULE_CHAOS_SEED=$${TENURE_SCHEDULE_CHAOS_SEED:-$$RANDOM} \
	$(PY) -m pytest -q -s tests/test_schedule_chaos.py

# Failovers of the PostgreSQL primary under a stream, with a real HA manager: etcd and
# three Patroni nodes in network namespaces (needs root, and `apt-get install patroni
# etcd-server`); 20 rounds of a crash, a cut and a switchover each, with a synchronous
# standby (FAILOVER_ARGS="--async" for asynchronous replication, "--rounds 3" to change).
.PHONY: chaos-failover
chaos-failover: $(STAMP)
	$(PY) -m chaos.failover --rounds 20 $(FAILOVER_ARGS)

# The fuzz tests with many more examples and a fresh seed each run; prints what they
# tried and how it ended (FUZZ_EXAMPLES=5000 for a longer run).
FUZZ_EXAMPLES ?= 2000
.PHONY: fuzz
fuzz: $(STAMP)
	TENURE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TENURE_FUZZ_RANDOM=1 $(PY) -m pytest -q -s tests/test_fuzz.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples bench chaos
	$(VENV)/bin/ruff format --check src tests examples bench chaos
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Tenure beside PgQueuer, Procrastinate, Celery+Redis and a bare-SQL floor; each peer
# is installed from PyPI into bench/.peers/<name>/ on first use. Pass flags with
# BENCH_FLAGS='--repeats 5 --kills 10' (see: .venv/bin/python bench/run.py --help).
.PHONY: bench
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) bench/run.py $(BENCH_FLAGS)

# A 1,000,000-task burn-down: the last tenth's drain rate against the first's.
.PHONY: bench-bloat
bench-bloat: $(STAMP)
	$(PY) bench/bloat.py $(BENCH_FLAGS)

# 64 worker processes on one database, then 2,000,000 queued + 5,000,000 finished tasks:
# claim latency, status, prune, heartbeat load and lock waits; writes bench/results/scale.md
# (about 10 minutes; BENCH_FLAGS='--processes 16 --queued 200000' for a quicker look).
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(PY) bench/scale.py $(BENCH_FLAGS)

# The documents app on this machine's own documentation (about 1,300 files), one
# worker SIGKILLed mid-run: every file accounted for, five phrases found, documents/s.
.PHONY: bench-documents
bench-documents: $(STAMP)
	$(PY) bench/real_documents.py $(BENCH_FLAGS)

.PHONY: bench-scale-out
bench-scale-out: $(STAMP)
	$(PY) bench/scale_out.py

.PHONY: bench-cpu
bench-cpu: $(STAMP)
	$(PY) bench/scale_out.py --kind cpu --ms 50 --concurrency 2 --processes 1,2

# What schedules cost: statements per worker per second of four workers with none, with
# 1,000 hourly schedules (an idle fleet) and with 1,000 ticking once a minute each.
.PHONY: bench-schedules
bench-schedules: $(STAMP)
	$(PY) bench/schedules_load.py $(BENCH_FLAGS)

# Two workers (--concurrency 50), 5,000 tasks/s for ~20 s, 100,000 at once, ~30 s more:
# FAIL on a 2 s window with no finish while work is queued, or post-spike pickup p99 > 100 ms.
# BENCH_FLAGS='--runs 5 --dsn postgresql://postgres@127.0.0.1:5432/test' (default: embedded).
.PHONY: bench-stream
bench-stream: $(STAMP)
	$(PY) bench/stream.py $(BENCH_FLAGS)
