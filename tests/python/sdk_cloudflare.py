"""Cloudflare's Python SDK on Torii's management API: provider configs with auto-paging, custom
providers, log filters (the SDK's own query encoding), log detail; answers parsed by the SDK's
own models. Prints a JSON summary."""
import json
import os
import urllib.request

from cloudflare import Cloudflare

api = os.environ["TORII_API"]
account = "local"
cf = Cloudflare(api_token=os.environ["TORII_TOKEN"], base_url=api, max_retries=0)
out = {}

gateway = cf.ai_gateway.create(
    account_id=account, id="sdk", cache_invalidate_on_update=False, cache_ttl=0, collect_logs=True,
    rate_limiting_interval=0, rate_limiting_limit=0, authentication=True,
)
out["gateway_id"] = gateway.id

for i, provider in enumerate(["openai", "anthropic", "groq"]):
    cf.ai_gateway.provider_configs.create(
        "sdk", account_id=account, alias="default", default_config=True, provider_slug=provider,
        secret=f"sk-sdk-secret-{i}-0123456789",
    )
configs = list(cf.ai_gateway.provider_configs.list("sdk", account_id=account, per_page=1))
out["provider_configs"] = sorted(c.provider_slug for c in configs)
out["secret_ids"] = all(c.secret_id for c in configs)

made = cf.ai_gateway.custom_providers.create(
    account_id=account, name="Internal vLLM", slug="vllm", base_url="http://127.0.0.1:1/v1",
)
got = cf.ai_gateway.custom_providers.get(made.id, account_id=account)
out["custom_created_year"] = got.created_at.year
out["custom_created_is_aware"] = got.created_at.tzinfo is not None
out["custom_description"] = got.description

# Two requests on the default gateway, then the SDK's own filter encoding.
for model in ["gpt-a", "gpt-b"]:
    req = urllib.request.Request(
        os.environ["TORII_BASE_URL"] + "/openai/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer sk-x"},
    )
    urllib.request.urlopen(req).read()
import time
deadline = time.monotonic() + 10
while True:  # the log writer commits in batches: poll with a deadline
    logs = list(cf.ai_gateway.logs.list(
        "default", account_id=account,
        filters=[{"key": "provider", "operator": "eq", "value": ["openai"]}, {"key": "success", "operator": "eq", "value": [True]}],
    ))
    if len(logs) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
out["logs_filtered"] = len(logs)
detail = cf.ai_gateway.logs.get(logs[0].id, account_id=account, gateway_id="default")
out["log_detail_has_heads"] = bool(detail.request_head) and bool(detail.response_head)
out["log_metadata"] = detail.metadata
cf.ai_gateway.logs.delete("default", account_id=account, filters=[{"key": "provider", "operator": "eq", "value": ["openai"]}])
out["logs_after_delete"] = len(list(cf.ai_gateway.logs.list("default", account_id=account)))
print(json.dumps(out))
