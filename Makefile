# Parallax: `make run` installs everything and opens the GUI on the demo scene; `make test` runs the suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.parallax-installed
SYSSTAMP := $(VENV)/.system-deps-checked

.PHONY: run test bench install system-deps screenshot clean-venv

run: install
	$(BIN)/parallax demo

install: system-deps $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# numpy/opencv pins must win over nerfstudio's loose ranges; constraints keep the resolve exact
	$(BIN)/python -m pip install -q -e '.[test]'
	# nerfstudio pulls opencv-python-headless; both wheels write cv2/: reinstall the contrib build last
	$(BIN)/python -m pip install -q --no-deps --force-reinstall opencv-contrib-python-headless==4.10.0.84
	$(BIN)/python -c "import cv2; assert hasattr(cv2, 'xfeatures2d'), 'cv2 is not the contrib build'"
	touch $(STAMP)

test: install
	xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python -m bench.run

screenshot: install
	xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m app.screenshot assets/screenshot.png

clean-venv:
	rm -rf $(VENV)
