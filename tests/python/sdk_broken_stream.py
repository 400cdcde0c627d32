"""Streams through Torii from an upstream that breaks after its first event, with both official
SDKs, and prints whether each SDK raised an error (it must, rather than end quietly)."""
import json
import os

from anthropic import Anthropic
from openai import OpenAI

base = os.environ["TORII_BASE_URL"]
result = {}

openai_client = OpenAI(base_url=base + "/openai", api_key="sk-test-openai", max_retries=0)
received = []
try:
    for chunk in openai_client.chat.completions.create(
        model="gpt-mock", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
    result["openai"] = {"error": None, "received": received}
except Exception as e:  # the point of the test: which error surfaces
    result["openai"] = {"error": type(e).__name__, "message": str(e), "received": received}

anthropic_client = Anthropic(base_url=base + "/anthropic", api_key="sk-ant-test", max_retries=0)
events = []
try:
    with anthropic_client.messages.stream(
        model="claude-mock", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        for event in stream:
            events.append(event.type)
    result["anthropic"] = {"error": None, "events": events}
except Exception as e:
    result["anthropic"] = {"error": type(e).__name__, "message": str(e), "events": events}

print(json.dumps(result))
