"""The OpenAI Agents SDK (`openai-agents`) end to end against the real server and model: an agent with a function
tool that it must call (`tool_choice="required"`), on the Responses model and on the Chat Completions model. The
SDK's tracing (which would send spans to OpenAI) is off."""

from __future__ import annotations

import asyncio

import openai
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.live_server import PATIENT
from tests.test_responses import MODEL

set_tracing_disabled(True)


@pytest.mark.parametrize("model_class", [OpenAIResponsesModel, OpenAIChatCompletionsModel])
def test_an_agent_calls_its_function_tool_and_answers(server, model_class):
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        asked.append(city)
        return f"It is 18 C and sunny in {city}."

    client = openai.AsyncOpenAI(api_key="x", base_url=server.api_url, max_retries=0, timeout=PATIENT.read)  # a number: httpx2
    agent = Agent(
        name="Weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=model_class(model=MODEL, openai_client=client),
        # required only on the first turn (the SDK's default reset_tool_choice), then the model answers
        model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=48),
    )
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=3))
    assert asked and all(isinstance(city, str) and city for city in asked)
    assert isinstance(result.final_output, str) and result.final_output.strip()
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"
