"""A sequence's sampler on llama.cpp, run as llama.cpp's common_sampler runs it (common/sampling.cpp).

The chain (penalties, then greedy or top-k/p/min-p + seeded dist) picks a token from the whole vocabulary, and a
grammar checks that one token only; a token it rejects makes it filter every candidate and the chain pick again.
Filtering the whole vocabulary (~49k pieces against every state of the grammar) costs milliseconds a token with a
grammar of many tool schemas, checking one token next to nothing, and a model mostly picks what the grammar allows.
Greedy text is the same as with the grammar inside the chain; a sampled token's odds are those of the filtered
vocabulary (a rejected draw is drawn again from it), though top-k/p and min-p then cut the whole vocabulary's.

A lazy grammar waits for a trigger word (tool calls under `auto`). llama.cpp's own lazy grammar searches all the
text written so far for its trigger after every token, so each token costs more than the last (a second a token
after a thousand, with a `[\\s\\S]*?(…)` pattern); here the last bytes written are scanned for the words, and the
lazy grammar is created only once one appears, given just the tokens that hold it (from which it constrains the
text from the word on, as it would have).
"""

from __future__ import annotations

import ctypes
import random

import llama_cpp
from llama_cpp._internals import LlamaSampler, LlamaTokenDataArray
from llama_cpp.llama_grammar import LlamaGrammar

from jan_server.models.jobs import Sampling

PENALTY_LAST_N = 64  # llama_cpp.Llama's default window for presence/frequency penalties
REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")


class Sampler:
    """The chain and, apart from it, the grammar, if any. `piece` gives a token's bytes."""

    def __init__(self, vocab, n_vocab: int, sampling: Sampling, piece):
        self.piece = piece
        self.chain = chain(sampling, n_vocab)
        self.grammar = None
        self.candidates = LlamaTokenDataArray(n_vocab=n_vocab)
        self._token = llama_cpp.llama_token_data()
        self._one = llama_cpp.llama_token_data_array(data=ctypes.pointer(self._token), size=1, selected=-1, sorted=False)
        self._words = [word.encode() for word in sampling.grammar_triggers] if sampling.grammar else []
        self._recent: list[int] = []  # while a lazy grammar waits: the last tokens, as many as could hold a word
        try:
            if sampling.grammar:
                self.grammar = grammar_sampler(vocab, sampling.grammar, self._words)
        except BaseException:
            self.close()
            raise

    @property
    def constrains(self) -> bool:
        """Whether the grammar checks tokens (it has one, and a lazy one saw its word)."""
        return self.grammar is not None and not self._words

    def sample(self, logits) -> int:
        """A token from a row's logits (accepted): the chain's pick if the grammar allows it, else the chain's pick
        among the tokens the grammar allows."""
        candidates = self.candidates
        candidates.copy_logits(logits)
        token = self._pick()
        if self.constrains and not self._allows(token):
            candidates.copy_logits(logits)
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates.candidates))
            token = self._pick()
        self.accept(token)
        return token

    def _pick(self) -> int:
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(self.candidates.candidates))
        return int(self.candidates.candidates_data.id[self.candidates.candidates.selected])

    def _allows(self, token: int) -> bool:
        self._token.id, self._token.logit, self._token.p = token, 1.0, 0.0
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._one))
        return self._token.logit != float("-inf")

    def accept(self, token: int) -> None:
        """The token into the chain (penalties), then `follow`."""
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        self.follow(token)

    def follow(self, token: int) -> None:
        """The token into the grammar; while a lazy grammar waits, into the scan for its words."""
        if self.constrains:
            llama_cpp.llama_sampler_accept(self.grammar, token)
        elif self._words:
            self._wait(token)

    def _wait(self, token: int) -> None:
        recent = self._recent
        recent.append(token)
        written = b"".join(map(self.piece, recent))
        if any(word in written for word in self._words):
            self._words = []  # the grammar takes over: it finds the word in what it is given, and constrains from there
            for held in recent:
                llama_cpp.llama_sampler_accept(self.grammar, held)
            recent.clear()
            return
        longest = max(map(len, self._words))
        while len(recent) > 1 and len(written) - len(self.piece(recent[0])) >= longest - 1:
            written = written[len(self.piece(recent.pop(0))):]

    def close(self) -> None:
        self.chain.close()
        grammar, self.grammar = self.grammar, None
        if grammar is not None:
            llama_cpp.llama_sampler_free(grammar)


def grammar_sampler(vocab, gbnf: str, words: list[bytes]):
    """llama.cpp's grammar sampler; with trigger words, lazy: it constrains the text from a word on."""
    grammar = LlamaGrammar.from_string(gbnf, verbose=False)
    text, root = grammar._grammar.encode(), grammar._root.encode()
    if words:
        patterns = (ctypes.c_char_p * len(words))(*map(pattern, words))
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(vocab, text, root, patterns, len(patterns), None, 0)
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
    if not sampler:
        raise ValueError("the grammar could not be parsed")
    return sampler


def chain(sampling: Sampling, n_vocab: int) -> LlamaSampler:
    """The chain as llama_cpp.Llama builds it, without the grammar: penalties, then greedy or top-k/p + seeded dist."""
    chain = LlamaSampler()
    try:
        chain.add_penalties(n_vocab, PENALTY_LAST_N, 1.0, sampling.frequency_penalty, sampling.presence_penalty)
        if sampling.temperature == 0:
            chain.add_greedy()
        else:
            chain.add_top_k(sampling.top_k)
            chain.add_top_p(sampling.top_p, 1)
            chain.add_min_p(sampling.min_p, 1)
            chain.add_temp(sampling.temperature)
            chain.add_dist(sampling.seed & 0xFFFFFFFF if sampling.seed is not None else random.getrandbits(32))
    except BaseException:
        chain.close()
        raise
    return chain


def pattern(word: bytes) -> bytes:
    """llama.cpp's trigger regex for a literal word: it constrains the text from the first group on."""
    return b"(" + b"".join(b"\\" + bytes([c]) if chr(c) in REGEX_SPECIAL else bytes([c]) for c in word) + b")"
