"""Retrieval over stored files: text extraction, chunking, ingestion into vector stores, and search."""
