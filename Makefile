# The two commands: `make demo` (set up and run the main job end to end) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test install clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/journeys generate --customers 10000 --days 45 --seed 7 --incident stage=verify,from=30,factor=2 --out $(DEMO_DIR)
	$(BIN)/journeys summary --data $(DEMO_DIR) --journey journey_defs/subscription.yaml
	$(BIN)/journeys backfill --from 2026-01-05 --to 2026-02-17 --data $(DEMO_DIR) --journey subscription --buckets 4
	$(BIN)/journeys nightly --date 2026-02-18 --data $(DEMO_DIR) --journey subscription --buckets 4
	$(BIN)/journeys alerts --all --data $(DEMO_DIR)
	$(BIN)/journeys report --journey subscription --date 2026-02-18 --data $(DEMO_DIR)

# Two workers, one test file each (module fixtures stay whole): the suite is half waiting on
# subprocesses and servers, so two workers on two cores take ~9 min instead of ~14.
test: chromium $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The report test renders in headless Chromium, found as warehouse/report.py's find_chromium does.
chromium:
	@{ [ -n "$$JOURNEYS_CHROMIUM" ] && command -v "$$JOURNEYS_CHROMIUM"; } >/dev/null 2>&1 \
	  || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 \
	  || { echo "make test: the report test needs Chromium: sudo apt-get install chromium (Debian/Ubuntu), or set JOURNEYS_CHROMIUM to a Chromium or Chrome binary" >&2; exit 1; }

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
