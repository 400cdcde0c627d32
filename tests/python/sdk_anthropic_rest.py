"""The official Anthropic Python SDK on Torii's REST unified API (/ai/v1/messages), reaching
non-Anthropic models: plain, streamed, with tools. Prints one JSON object."""
import json
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["TORII_REST"], api_key=os.environ["TORII_TOKEN"], max_retries=0,
                             default_headers={"cf-aig-gateway-id": "default"})
tools = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
out = {}
for model in os.environ["TORII_MODELS"].split(","):
    seen = {}
    msg = client.messages.create(model=model, max_tokens=64, system="Be brief.",
                                 messages=[{"role": "user", "content": "Hello?"}])
    seen["text"] = msg.content[0].text
    seen["stop"] = msg.stop_reason
    seen["usage"] = [msg.usage.input_tokens, msg.usage.output_tokens]
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "Hello?"}]) as s:
        seen["stream_text"] = "".join(s.text_stream)
        final = s.get_final_message()
        seen["stream_stop"] = final.stop_reason
        seen["stream_output_tokens"] = final.usage.output_tokens
    called = client.messages.create(model=model, max_tokens=64, tools=tools,
                                    messages=[{"role": "user", "content": "Weather in Paris?"}])
    use = [b for b in called.content if b.type == "tool_use"][0]
    seen["tool"] = [use.name, use.input, called.stop_reason]
    with client.messages.stream(model=model, max_tokens=64, tools=tools,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
        final = s.get_final_message()
        use = [b for b in final.content if b.type == "tool_use"][0]
        seen["stream_tool"] = [use.name, use.input]
    # A tool result goes back.
    client.messages.create(model=model, max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]},
    ])
    out[model] = seen
try:
    anthropic.Anthropic(base_url=os.environ["TORII_REST"], api_key="torii_wrong", max_retries=0).messages.create(
        model="openai/gpt-mock", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    out["wrong_token"] = "accepted"
except anthropic.AuthenticationError as e:
    out["wrong_token"] = e.status_code
print(json.dumps(out))
