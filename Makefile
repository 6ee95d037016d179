# Two commands on a fresh machine: `make run` and `make test`. Both install everything first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RECIPE ?= recipes/mobilevit_int8.yaml
RUN    ?= runs/$(basename $(notdir $(RECIPE)))
# a fresh .venv is ~6.6 GB (torch 2.14.1's only wheel here is the CUDA build: nvidia-* 3.2 GB, triton 0.9 GB) plus pip's unpacking room
VENV_NEED_KB ?= 8000000
# one pytest-xdist worker per core (at most 4); a test file stays in one worker, so its fixtures are built once; files
# are handed out longest first (tests/conftest.py FILE_SECONDS), not by xdist's own reorder (number of tests per file)
PYTEST_WORKERS ?= -n $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n) --dist loadfile --no-loadscope-reorder

.PHONY: install java-tools run test bench ablation clean android

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 2; }
	@test -x $(BIN)/python || { kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); [ "$$kb" -ge $(VENV_NEED_KB) ] || { \
	    echo "error: only $$((kb / 1048576)) GB free on this disk; the venv needs about 8 GB (torch 2.14.1 brings its CUDA wheels): free some space and rerun"; exit 2; }; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The JDK and JUnit 4 for the Android demo (its core tests in tests/test_android_core.py, and `make android`), from apt
# when missing: a prerequisite of `make test` and `make android` only, so `make run` needs no Java and no root.
java-tools:
	@command -v javac >/dev/null && test -f /usr/share/java/junit4.jar || { \
	    [ "$$(id -u)" = 0 ] || { echo "error: javac or junit4 missing; run: sudo apt-get install -y default-jdk-headless junit4"; exit 2; }; \
	    echo "installing default-jdk-headless junit4 (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends default-jdk-headless junit4 >/dev/null || { \
	    echo "error: apt-get install default-jdk-headless junit4 failed"; exit 2; }; }

# The headline run; the same student trained stage-2-only (contrastive from scratch on S's pairs, no teacher, for the
# headline's 30 + 30 epochs, at the learning rate bench/ablation.py chose on val) for comparison. Equal epochs, not
# equal steps: an epoch over S's pairs is 4 steps, over stage 1's rows (S + K images + K names) 16;
# bench/ablation.py --curves shows stage-2-only at 2x and 4x; then one eval table of teacher,
# baseline and the DC-CLIP student (fp32 and the int8 .pte) on known / eval / unseen and unseen's strata. --resume: an
# interrupted `make run` continues where it stopped.
TWIN_LR ?= 1e-3
EVAL_SPLITS ?= known,eval,unseen,unseen_sibling,unseen_novel,unseen_flags
run: install
	$(BIN)/dcclip-compress run $(RECIPE) --out $(RUN) --resume
	$(BIN)/dcclip-compress run $(RECIPE) --out $(RUN)-stage2-only --resume --set name=$(notdir $(RUN))-stage2-only \
	    --set distill.enabled=false --set align.epochs=60 --set align.lr=$(TWIN_LR) --set align.retain=0.0 \
	    --set distill.unpaired_images=null --set distill.text_only=null --set qat.enabled=false --set export.enabled=false
	$(BIN)/dcclip-compress eval teacher=$(RUN)/teacher stage2-only=$(RUN)-stage2-only fp32=$(RUN) int8=$(RUN)/export \
	    --suite all --splits $(EVAL_SPLITS) --out $(RUN)/eval

test: install java-tools
	$(BIN)/pytest -q $(PYTEST_WORKERS)

# A signed debug APK of android_demo/ with Debian's tools (android_demo/build-apk.sh). BUNDLE: an export folder;
# default: $(RUN)/export when `make run` has written one, else a tiny random-weight bundle built here (~1-2 min).
ANDROID_APK ?= android_demo/build/dcclip-demo.apk
TINY_BUNDLE := android_demo/build/tiny-bundle
android: install java-tools
	@b="$(BUNDLE)"; if [ -z "$$b" ]; then \
	    if [ -f $(RUN)/export/bundle.json ]; then b=$(RUN)/export; \
	    else b=$(TINY_BUNDLE); [ -f $$b/parity/parity.json ] || { echo "android: no $(RUN)/export yet; building a tiny bundle in $$b"; \
	        $(BIN)/python android_demo/tools/tiny_bundle.py $$b >/dev/null || exit 2; }; fi; fi; \
	android_demo/build-apk.sh "$$b" $(ANDROID_APK)

bench: install
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.eval_throughput
	$(BIN)/python -m bench.stage1_throughput
	$(BIN)/python -m bench.latency_table

ablation: install
	$(BIN)/python -m bench.ablation --seeds 0,1,2 --split-seeds 0,1,2 --curves --docs

clean:
	rm -rf runs .cache
