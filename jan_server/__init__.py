"""jan-server: a local, OpenAI-compatible API server built from the Jan API reference."""
