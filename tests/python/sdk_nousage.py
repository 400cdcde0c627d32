"""LangChain and LiteLLM stream chat completions without stream_options: the text they see, one
line of JSON. Torii must still log every stream's tokens."""
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
base = os.environ["TORII_BASE_URL"] + "/openai"
out = {}

from langchain_openai import ChatOpenAI  # noqa: E402

chat = ChatOpenAI(base_url=base, api_key="sk-langchain", model="gpt-mock", max_retries=0)
out["langchain"] = "".join(chunk.content for chunk in chat.stream("Hello?"))

import litellm  # noqa: E402

text = ""
for chunk in litellm.completion(model="openai/gpt-mock", api_base=base, api_key="sk-litellm", stream=True,
                                messages=[{"role": "user", "content": "Hello?"}]):
    text += chunk.choices[0].delta.content or ""
out["litellm"] = text
print(json.dumps(out))
