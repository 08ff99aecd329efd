"""Prompts without a chat template, for completions and embeddings: text or token ids -> the tokens a model reads.

Text is tokenized as llama-cpp-python's own completion does (the model's special tokens, with BOS if the model
adds one); token ids must name tokens of the model's vocabulary. Request threads run this (the vocabulary is
read-only); the caller keeps the model open meanwhile.
"""

from __future__ import annotations

from jan_server.errors import InvalidRequestError

Prompt = str | list[int]


def listed(value: Prompt | list[Prompt]) -> list[Prompt]:
    """A request's prompts: a string or one token array is one prompt; a list of either, several."""
    if isinstance(value, str) or isinstance(value[0], int):
        return [value]
    return list(value)


def tokens_of(model, prompt: Prompt, *, param: str, special: bool = True) -> list[int]:
    """The prompt's tokens. `special`: text may write the model's special tokens (`<|im_start|>`) as text."""
    if isinstance(prompt, str):
        return model.tokenize(prompt.encode("utf-8"), add_bos=True, special=special)
    n_vocab = model.n_vocab()
    bad = next((token for token in prompt if not 0 <= token < n_vocab), None)
    if bad is not None:
        raise InvalidRequestError(
            f"Token id {bad} is not in this model's vocabulary (0 to {n_vocab - 1}).", param=param, code="invalid_token"
        )
    return list(prompt)


def fits(tokens: list[int], n_ctx: int, *, param: str, room: int = 0) -> list[int]:
    """The tokens, or a 400 `context_length_exceeded` if they (and `room` tokens more) do not fit in n_ctx."""
    if len(tokens) + room > n_ctx:
        raise InvalidRequestError(
            f"This model's maximum context length is {n_ctx} tokens. However, your {param} resulted in "
            f"{len(tokens)} tokens. Please reduce the length of the {param}.",
            param=param,
            code="context_length_exceeded",
        )
    return tokens


def start_token(model) -> int:
    """What an empty prompt reads: the document start (BOS), as in llama-cpp-python."""
    bos = model.token_bos()
    return bos if bos != -1 else model.token_eos()


def fill_in_the_middle(model, prefix: list[int], suffix: list[int]) -> list[int]:
    """`<FIM_PRE>prefix<FIM_SUF>suffix<FIM_MID>`, as llama.cpp's server builds it; 400 on a model without FIM tokens."""
    pre, suf, mid = model.token_prefix(), model.token_suffix(), model.token_middle()
    if -1 in (pre, suf, mid):
        raise InvalidRequestError(
            "This model does not support fill-in-the-middle (its vocabulary has no FIM tokens): leave out `suffix`.",
            param="suffix",
            code="unsupported_parameter",
        )
    return [pre, *prefix, suf, *suffix, mid]
