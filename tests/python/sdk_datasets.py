"""Cloudflare's Python SDK on datasets, evaluation types and evaluations (every answer parsed by
its models). Prints a JSON summary."""
import json
import os

from cloudflare import Cloudflare

cf = Cloudflare(api_token=os.environ["TORII_TOKEN"], base_url=os.environ["TORII_API"], max_retries=0)
account, gw = "local", "default"
out = {}

made = cf.ai_gateway.datasets.create(
    gw, account_id=account, name="openai-only", enable=True,
    filters=[{"key": "provider", "operator": "eq", "value": ["openai"]}],
)
other = cf.ai_gateway.datasets.create(
    gw, account_id=account, name="fast", enable=True, filters=[{"key": "duration", "operator": "lt", "value": [60000]}],
)
out["dataset_filter"] = [made.filters[0].key, made.filters[0].operator, made.filters[0].value]
out["datasets"] = sorted(d.name for d in cf.ai_gateway.datasets.list(gw, account_id=account, per_page=1))
updated = cf.ai_gateway.datasets.update(
    other.id, account_id=account, gateway_id=gw, name="fast-requests", enable=True,
    filters=[{"key": "duration", "operator": "lt", "value": [60000]}],
)
out["renamed"] = cf.ai_gateway.datasets.get(updated.id, account_id=account, gateway_id=gw).name
types = list(cf.ai_gateway.evaluation_types.list(account_id=account))
out["types"] = sorted(t.id for t in types)
ev = cf.ai_gateway.evaluations.create(
    gw, account_id=account, name="weekly", dataset_ids=[made.id], evaluation_type_ids=[t.id for t in types],
)
out["evaluation"] = {"processed": ev.processed, "total_logs": ev.total_logs,
                     "results": {r.evaluation_type_id: json.loads(r.result) for r in ev.results},
                     "dataset": ev.datasets[0].name}
out["evaluations"] = [e.name for e in cf.ai_gateway.evaluations.list(gw, account_id=account)]
out["got"] = cf.ai_gateway.evaluations.get(ev.id, account_id=account, gateway_id=gw).total_logs
cf.ai_gateway.evaluations.delete(ev.id, account_id=account, gateway_id=gw)
cf.ai_gateway.datasets.delete(made.id, account_id=account, gateway_id=gw)
out["left"] = [d.name for d in cf.ai_gateway.datasets.list(gw, account_id=account)]
print(json.dumps(out))
