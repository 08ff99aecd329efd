"""Chat messages -> prompt tokens: the model's chat template (ChatML when it has none), tokenizing, and the check
that the prompt fits the context. Request threads run this themselves (the vocabulary is read-only).

A template that reads `tools` gets the tools and the messages as OpenAI shapes them (`tool_calls`, `role: tool`);
for any other, jan_server.models.tools writes them into the messages (see `tools.prompt_messages`)."""

from __future__ import annotations

from typing import NamedTuple

from jan_server.errors import InvalidRequestError
from jan_server.models import tools as tool_calls


class Prompt(NamedTuple):
    text: str
    add_bos: bool  # False when the template already wrote the special tokens
    stops: list[str]  # the template's own stop strings


class PromptFormatter:
    """Formats and tokenizes chats for one model with a context of n_ctx tokens per sequence."""

    def __init__(self, model, n_ctx: int):
        from llama_cpp import llama_chat_format

        self.model = model
        self.n_ctx = n_ctx
        template = model.metadata().get("tokenizer.chat_template")
        self.takes_tools = bool(template) and takes_tools(template)
        if template:
            eos, bos = model.token_eos(), model.token_bos()
            self._format = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        else:
            self._format = llama_chat_format.format_chatml

    def format(self, messages: list[dict], tools: list[dict] | None = None) -> Prompt:
        """The prompt of a chat; `tools` (OpenAI tool objects) are the functions the model is offered."""
        if self.takes_tools:
            formatted = self._format(messages=messages, tools=tools or None)
        else:
            formatted = self._format(messages=tool_calls.prompt_messages(messages, tools))
        stop = formatted.stop or []
        return Prompt(formatted.prompt, not formatted.added_special, [stop] if isinstance(stop, str) else list(stop))

    def encode(self, prompt: Prompt) -> list[int]:
        """The prompt's tokens, however many."""
        return self.model.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)

    def tokenize(self, prompt: Prompt) -> list[int]:
        """The prompt's tokens; a 400 `context_length_exceeded` if they leave no room for an answer."""
        tokens = self.encode(prompt)
        if len(tokens) >= self.n_ctx:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your messages resulted in "
                f"{len(tokens)} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        return tokens


def takes_tools(template: str) -> bool:
    """Whether a Jinja chat template reads the `tools` variable."""
    import jinja2
    import jinja2.meta
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    environment = jinja2.Environment(extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, "jinja2.ext.loopcontrols"])
    try:
        return "tools" in jinja2.meta.find_undeclared_variables(environment.parse(template))
    except jinja2.TemplateSyntaxError:
        return False  # the formatter reports it on the first chat
