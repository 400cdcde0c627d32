"""The official OpenAI Python SDK on Torii's unified API (/compat): every model named as
"{provider}/{model}", plain and streamed, with and without tools. Prints one JSON object."""
import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["TORII_BASE_URL"] + "/compat", api_key="sk-compat-key", max_retries=0)
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
out = {}
for model in os.environ["TORII_MODELS"].split(","):
    seen = {}
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=50)
    seen["text"] = plain.choices[0].message.content
    seen["finish"] = plain.choices[0].finish_reason
    seen["tokens"] = [plain.usage.prompt_tokens, plain.usage.completion_tokens]
    text = ""
    usage = None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    seen["stream_text"] = text
    seen["stream_usage"] = usage
    called = client.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto")
    call = called.choices[0].message.tool_calls[0]
    seen["tool"] = [call.function.name, json.loads(call.function.arguments), called.choices[0].finish_reason]
    # The tool result goes back as the next turn.
    follow = messages + [called.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "{\"temp\": 21}"}]
    client.chat.completions.create(model=model, messages=follow)
    name, args = None, ""
    for chunk in client.chat.completions.create(model=model, messages=messages, tools=tools, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
    seen["stream_tool"] = [name, json.loads(args) if args else None]
    out[model] = seen
print(json.dumps(out))
