"""Sends the seed article's universal-endpoint request, byte for byte as its curl command does
(only the account, the gateway and the XXXX placeholders replaced), and prints what came back."""
import json
import os
import urllib.request

BODY = r"""[ \
{ \
"provider": "workers-ai", \
"endpoint": "@cf/meta/llama-2-7b-chat-int8", \
"headers": { \
"Authorization": "Bearer XXXX", \
"Content-Type": "application/json" \
}, \
"query": { \
"messages": [ \
{ \
"role": "system", \
"content": "You are a friendly assistant" \
}, \
{ \
"role": "user", \
"content": "Why is pizza so good" \
} \
] \
} \
}, \
{ \
"provider": "openai", \
"endpoint": "chat/completions", \
"headers": { \
"Authorization": "Bearer YYYY", \
"Content-Type": "application/json" \
}, \
"query": { \
"model": "gpt-3.5-turbo", \
"messages": [ \
{ \
"role": "user", \
"content": "What is Cloudflare?" \
} \
] \
} \
} \
]"""

# The article breaks the Workers AI token on purpose to show the fallback.
body = BODY.replace("XXXX", "invalid-workers-token").replace("YYYY", "sk-good-openai")
request = urllib.request.Request(
    os.environ["TORII_UNIVERSAL_URL"],
    data=body.encode(),
    headers={"Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(request, timeout=30) as response:
    payload = json.loads(response.read())
    print(json.dumps({
        "status": response.status,
        "step": response.headers.get("cf-aig-step"),
        "content": payload["choices"][0]["message"]["content"],
    }))
