# Two commands from a clean clone on Debian: `make run` serves, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := dcmtk orthanc postgresql libgdcm-tools

.PHONY: run test bench system-packages clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/isengard $(CONFIG)

# DCMTK and Orthanc 1.10.1 are the real peers of the tests (differential tests compare with Orthanc);
# PostgreSQL runs the index tests on the scale-out database; DCMTK and GDCM's tools decode the
# reference pixels of the image tests.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

test: $(STAMP) system-packages
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP) system-packages
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) isengard-db
