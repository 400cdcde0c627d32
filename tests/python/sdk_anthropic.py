"""Drives Torii with the official Anthropic Python SDK; prints one JSON object with what it saw."""
import json
import os

from anthropic import Anthropic

client = Anthropic(base_url=os.environ["TORII_BASE_URL"] + "/anthropic", api_key="sk-ant-test", max_retries=0)

message = client.messages.create(
    model="claude-mock", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
)

events = []
text = []
with client.messages.stream(
    model="claude-mock", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
) as stream:
    for event in stream:
        events.append(event.type)
        if event.type == "content_block_delta":
            text.append(event.delta.text)
    final = stream.get_final_message()

print(json.dumps({
    "content": message.content[0].text,
    "input_tokens": message.usage.input_tokens,
    "output_tokens": message.usage.output_tokens,
    "stream_text": "".join(text),
    "stream_events": events,
    "stream_output_tokens": final.usage.output_tokens,
}))
