"""Drives Torii with the official OpenAI Python SDK; prints one JSON object with what it saw."""
import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["TORII_BASE_URL"] + "/openai", api_key="sk-test-openai", max_retries=0)

plain = client.chat.completions.with_raw_response.create(
    model="gpt-mock", messages=[{"role": "user", "content": "hi"}]
)
completion = plain.parse()

chunks = []
usage_chunks = 0
stream = client.chat.completions.create(
    model="gpt-mock", messages=[{"role": "user", "content": "hi"}], stream=True
)
for chunk in stream:
    if not chunk.choices:
        usage_chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)

# A client that asks for usage gets it.
asked_usage = None
for chunk in client.chat.completions.create(
    model="gpt-mock", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage:
        asked_usage = chunk.usage.total_tokens

print(json.dumps({
    "content": completion.choices[0].message.content,
    "total_tokens": completion.usage.total_tokens,
    "request_id_header": plain.headers.get("cf-aig-request-id"),
    "stream_chunks": chunks,
    "usage_chunks_unasked": usage_chunks,
    "usage_when_asked": asked_usage,
}))
