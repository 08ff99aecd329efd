"""Chunks of a text by the embedding model's tokens, as OpenAI's static strategy: windows of at most
`max_chunk_size_tokens`, each starting `max - overlap` tokens after the previous one."""

from __future__ import annotations


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of a text of `n_tokens`; the last ends at the text's end."""
    step = size - overlap
    spans, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def chunks(model, text: str, strategy: dict) -> list[tuple[str, list[int]]]:
    """The text's chunks (their text, their tokens) for a llama model's vocabulary (jan_server.models.loading). Each
    chunk's tokens start with the BOS the model adds to a text, as a query's do (jan_server.models.raw_prompt)."""
    tokens = model.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    bos = model.tokenize(b"", add_bos=True, special=False)
    static = strategy["static"]
    return [(model.detokenize(tokens[start:end], special=False).decode("utf-8", errors="replace").strip(), bos + tokens[start:end])
            for start, end in windows(len(tokens), static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])]
