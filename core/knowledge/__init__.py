"""Knowledge: offline embeddings, chromadb-backed knowledge bases, ingestion and retrieval."""
