"""The sampler (jan_server.models.sampler) on the bundled model's vocabulary: a grammar checks the chain's pick and
filters the vocabulary only when it rejects it, greedy picks are those of a chain holding the grammar, and a lazy
grammar sees nothing of the text before its word however long it is."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest
from llama_cpp._internals import LlamaSampler, LlamaTokenDataArray
from llama_cpp.llama_grammar import LlamaGrammar

from jan_server.models import tools
from jan_server.models.jobs import Sampling
from jan_server.models.registry import bundled_weights
from jan_server.models.sampler import Sampler, pattern

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def model():
    return llama_cpp.Llama(str(bundled_weights()), vocab_only=True, verbose=False)


def greedy(plan: tools.ToolPlan | None, **overrides) -> Sampling:
    return Sampling.from_parameters({"temperature": 0, **(plan.parameters() if plan else {}), **overrides})


def sampler_of(model, sampling: Sampling) -> Sampler:
    return Sampler(model._model.vocab, model.n_vocab(), sampling, lambda token: piece(model, token))


def piece(model, token: int) -> bytes:
    return model._model.token_to_piece(token).rstrip(b"\0")


def tokens(model, text: str) -> list[int]:
    return model.tokenize(text.encode(), add_bos=False, special=False)


def preferring(model, *ranked: int) -> np.ndarray:
    """Logits whose best tokens are `ranked`, in order."""
    logits = np.zeros(model.n_vocab(), dtype=np.single)
    for rank, token in enumerate(ranked):
        logits[token] = 20.0 - rank
    return logits


def test_greedy_picks_are_those_of_a_chain_holding_the_grammar(model):
    """The chain that llama_cpp.Llama builds (grammar inside, then greedy) and the sampler pick the same tokens from
    the same random logits, including where the grammar rejects the chain's pick."""
    plan = tools.plan(WEATHER, "required")
    reference = LlamaSampler()
    grammar = LlamaGrammar.from_string(plan.grammar, verbose=False)
    llama_cpp.llama_sampler_chain_add(reference.sampler, llama_cpp.llama_sampler_init_grammar(
        model._model.vocab, grammar._grammar.encode(), grammar._root.encode()))
    reference.add_greedy()
    ours = sampler_of(model, greedy(plan))
    candidates, random = LlamaTokenDataArray(n_vocab=model.n_vocab()), np.random.default_rng(7)
    rejected = 0
    try:
        for _ in range(40):
            logits = random.normal(size=model.n_vocab()).astype(np.single)
            candidates.copy_logits(logits)
            llama_cpp.llama_sampler_apply(reference.sampler, ctypes.byref(candidates.candidates))
            expected = int(candidates.candidates_data.id[candidates.candidates.selected])
            rejected += expected != int(np.argmax(logits))
            llama_cpp.llama_sampler_accept(reference.sampler, expected)
            assert ours.sample(logits) == expected
    finally:
        ours.close()
        reference.close()
    assert rejected > 0


def test_the_grammar_checks_only_the_chains_pick_when_it_allows_it(model, monkeypatch):
    """Filtering the whole vocabulary is what costs with a large grammar: it happens only on a rejection."""
    ours = sampler_of(model, greedy(tools.plan(WEATHER, "required")))
    sizes = []
    apply = llama_cpp.llama_sampler_apply
    monkeypatch.setattr(llama_cpp, "llama_sampler_apply", lambda smpl, cur_p: (
        sizes.append(cur_p._obj.size) if smpl == ours.grammar else None, apply(smpl, cur_p))[1])
    try:
        call = tokens(model, '<tool_call>\n{"name": "get_weather"')
        for token in call:
            assert ours.sample(preferring(model, token)) == token
        assert sizes == [1] * len(call)
        sizes.clear()
        assert ours.sample(preferring(model, tokens(model, "Hello")[0], tokens(model, ",")[0])) == tokens(model, ",")[0]
        assert sizes == [1, model.n_vocab()]
    finally:
        ours.close()


def test_a_lazy_grammar_sees_nothing_before_its_word(model, monkeypatch):
    """Thousands of tokens before the word (llama.cpp's own lazy grammar searched them all again after every
    token), then the word split across tokens: the grammar takes over from the word on, given only the tokens that
    hold it."""
    ours = sampler_of(model, greedy(tools.plan(WEATHER)))
    fed = []
    accept = llama_cpp.llama_sampler_accept
    monkeypatch.setattr(llama_cpp, "llama_sampler_accept", lambda smpl, token: (
        fed.append(token) if smpl == ours.grammar else None, accept(smpl, token))[1])
    hello = tokens(model, " Hello")[0]
    try:
        for token in tokens(model, " the weather is fine." * 400):
            ours.accept(token)
        assert ours.sample(preferring(model, hello)) == hello  # free text: the grammar does not apply
        assert not fed and not ours.constrains
        word = tokens(model, "Let me check.<tool_call>\n")
        for token in word:
            ours.accept(token)
        assert ours.constrains and 0 < len(fed) <= len(word)
        brace = tokens(model, "{")[0]
        assert ours.sample(preferring(model, hello, brace)) == brace
    finally:
        ours.close()


def test_an_unparsable_grammar_is_refused_when_the_sampler_is_made(model):
    for lazy in (False, True):
        with pytest.raises(ValueError, match="could not be parsed"):
            sampler_of(model, greedy(None, grammar="root ::= (", grammar_triggers=[tools.TRIGGER] if lazy else []))


def test_trigger_words_are_literal_patterns():
    assert pattern(b"<tool_call>") == b"(<tool_call>)" and pattern(b"a.b(c)") == rb"(a\.b\(c\))"
