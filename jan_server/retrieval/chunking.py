"""Chunks of a text by the embedding model's tokens, as OpenAI's static strategy: windows of at most
`max_chunk_size_tokens`, each starting `max - overlap` tokens after the previous one. A remote model's tokenizer is
not here: its tokens are estimated at CHARS_PER_TOKEN characters each."""

from __future__ import annotations

#: Characters a token is estimated to take for a remote model (about what OpenAI's tokenizers give English text).
CHARS_PER_TOKEN = 4


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


def estimated(text: str, strategy: dict) -> list[str]:
    """The text's chunks by estimated tokens (a remote model's), without empty ones."""
    static = strategy["static"]
    n_tokens = -(-len(text) // CHARS_PER_TOKEN)
    pieces = (text[start * CHARS_PER_TOKEN:end * CHARS_PER_TOKEN].strip()
              for start, end in windows(n_tokens, static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]))
    return [piece for piece in pieces if piece]
