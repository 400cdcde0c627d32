"""The OpenAI SDK against an authenticated gateway with a stored provider key: the client sends
only its gateway token (and the placeholder key the SDK insists on); the second call is cached."""
import json
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ["TORII_BASE_URL"] + "/openai",
    api_key="placeholder",
    default_headers={"cf-aig-authorization": "Bearer " + os.environ["TORII_GATEWAY_TOKEN"]},
    max_retries=0,
)
statuses = []
contents = []
for _ in range(2):
    raw = client.chat.completions.with_raw_response.create(model="gpt-mock", messages=[{"role": "user", "content": "hi"}])
    statuses.append(raw.headers.get("cf-aig-cache-status"))
    contents.append(raw.parse().choices[0].message.content)
print(json.dumps({"cache": statuses, "contents": contents}))
