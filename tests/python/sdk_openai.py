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
stream = client.chat.completions.create(
    model="gpt-mock", messages=[{"role": "user", "content": "hi"}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)

print(json.dumps({
    "content": completion.choices[0].message.content,
    "total_tokens": completion.usage.total_tokens,
    "request_id_header": plain.headers.get("cf-aig-request-id"),
    "stream_chunks": chunks,
}))
