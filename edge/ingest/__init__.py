"""Ingest: request bodies (JSON, NDJSON, CSV) parsed and validated into one scoring batch."""
