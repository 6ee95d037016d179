# Two commands on a fresh machine: `make run` and `make test`. Both install everything first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RECIPE ?= recipes/mobilevit_int8.yaml
RUN    ?= runs/$(basename $(notdir $(RECIPE)))

.PHONY: install run test bench ablation clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The headline run, the same student trained stage-2-only (contrastive from scratch, no teacher) for comparison, then
# one eval table of teacher, baseline and the DC-CLIP student (fp32 and the int8 .pte). --resume: an interrupted
# `make run` continues where it stopped.
run: install
	$(BIN)/dcclip-compress run $(RECIPE) --out $(RUN) --resume
	$(BIN)/dcclip-compress run $(RECIPE) --out $(RUN)-stage2-only --resume --set name=$(notdir $(RUN))-stage2-only \
	    --set distill.enabled=false --set qat.enabled=false --set export.enabled=false
	$(BIN)/dcclip-compress eval teacher=$(RUN)/teacher stage2-only=$(RUN)-stage2-only fp32=$(RUN) int8=$(RUN)/export \
	    --suite all --out $(RUN)/eval

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.eval_throughput
	$(BIN)/python -m bench.stage1_throughput

ablation: install
	$(BIN)/python -m bench.ablation --readme

clean:
	rm -rf runs .cache
