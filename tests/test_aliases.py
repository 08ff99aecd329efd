"""Model aliases (`--model-alias PATTERN=MODEL`, JAN_MODEL_ALIASES): a name a client insists on is served by the model
it names on every API, GET /v1/models says which patterns name a model, and an unknown model is still a 404."""

from __future__ import annotations

import anthropic
import openai
import pytest

from jan_server.cli import build_parser, settings_from_args
from jan_server.models.aliases import Aliases
from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.live_server import PATIENT, LiveServer, openai_at

MODEL = BUNDLED_MODEL_ID
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def aliased(tmp_path_factory) -> LiveServer:
    args = ("--model-alias", f"claude-*={MODEL}", "--model-alias", f"gpt-4?={MODEL},text-embedding-*={MODEL}")
    with LiveServer(tmp_path_factory.mktemp("aliases") / "data", args=args) as live:
        yield live


def test_every_api_serves_an_alias_with_its_model(aliased):
    with anthropic.Anthropic(base_url=aliased.base_url, api_key="unused", max_retries=0, timeout=PATIENT) as client:
        message = client.messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=HELLO)
        assert message.model == "claude-sonnet-4-5" and message.content
        assert client.messages.count_tokens(model="claude-haiku-4-5", messages=HELLO).input_tokens > 0
    with openai_at(aliased.api_url) as client:
        assert client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=4).choices[0].message.content
        assert client.completions.create(model="gpt-4o", prompt="Once", max_tokens=4).choices[0].text
        assert client.responses.create(model="gpt-4o", input="Hello", max_output_tokens=16).output_text is not None
        assert len(client.embeddings.create(model="text-embedding-3-small", input="Hello").data[0].embedding) > 0
        with pytest.raises(openai.NotFoundError):  # matches no pattern: `?` is one character
            client.chat.completions.create(model="gpt-4-turbo", messages=HELLO, max_tokens=4)


def test_the_models_list_names_each_models_aliases(aliased):
    with openai_at(aliased.api_url) as client:
        listed = {model.id: model.model_extra.get("aliases") for model in client.models.list()}
        assert listed[MODEL] == ["claude-*", "gpt-4?", "text-embedding-*"]
        assert client.models.retrieve(MODEL).model_extra["aliases"] == ["claude-*", "gpt-4?", "text-embedding-*"]


def test_aliases_come_from_flags_or_the_environment(monkeypatch):
    args = build_parser().parse_args(["--model-alias", "claude-*=a", "--model-alias", "gpt-*=b,o?=c"])
    assert settings_from_args(args).model_aliases == ("claude-*=a", "gpt-*=b", "o?=c")
    monkeypatch.setenv("JAN_MODEL_ALIASES", "claude-*=a")
    assert settings_from_args(build_parser().parse_args([])).model_aliases == ("claude-*=a",)
    aliases = Aliases(("claude-opus-*=big", "claude-*=small"))
    assert (aliases.target("claude-opus-4-5"), aliases.target("claude-haiku-4-5"), aliases.target("gpt-4o")) == ("big", "small", None)
    for bad in ("claude-*", "=model", "claude-*=../x"):
        with pytest.raises(ValueError):
            Aliases((bad,))
