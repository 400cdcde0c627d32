"""Cloudflare's Python SDK on dynamic routes (every call of `ai_gateway.dynamic_routing`, each
answer parsed by the SDK's models), then the OpenAI SDK calling the route as `dynamic/{name}`.
Prints a JSON summary."""
import json
import os

from cloudflare import Cloudflare
from openai import OpenAI

api = os.environ["TORII_API"]
account = "local"
gw = "default"
cf = Cloudflare(api_token=os.environ["TORII_TOKEN"], base_url=api, max_retries=0)
out = {}


def el(id, type, outputs, properties=None):
    e = {"id": id, "type": type, "outputs": {k: {"elementId": v} for k, v in outputs.items()}}
    if properties is not None:
        e["properties"] = properties
    return e


elements = [
    el("start", "start", {"next": "plan"}),
    el("plan", "conditional", {"true": "cheap", "false": "best"}, {"conditions": {"metadata.plan": {"$eq": "free"}}}),
    el("cheap", "model", {"success": "end", "fallback": "best"},
       {"provider": "openai", "model": "gpt-4o-mini", "timeout": 10000, "retries": 0}),
    el("best", "model", {"success": "end", "fallback": "end"},
       {"provider": "anthropic", "model": "claude-sonnet-4-5", "timeout": 10000, "retries": 1}),
    el("end", "end", {}),
]
made = cf.ai_gateway.dynamic_routing.create(gw, account_id=account, name="support", elements=elements)
out["created_version_active"] = made.version.active
out["created_elements"] = len(made.elements)
route_id = made.id

listed = cf.ai_gateway.dynamic_routing.list(gw, account_id=account)
out["listed"] = [r.name for r in listed.data.routes]

got = cf.ai_gateway.dynamic_routing.get(route_id, account_id=account, gateway_id=gw)
out["got_deployment_version"] = got.deployment.version_id == got.version.version_id

renamed = cf.ai_gateway.dynamic_routing.update(route_id, account_id=account, gateway_id=gw, name="helpdesk")
out["renamed"] = renamed.route.name

# A second version: everyone goes to the cheap model. A draft until deployed.
v2_elements = [e for e in elements if e["id"] != "plan"]
v2_elements[0] = el("start", "start", {"next": "cheap"})
cf.ai_gateway.dynamic_routing.create_version(route_id, account_id=account, gateway_id=gw, elements=v2_elements)
versions = cf.ai_gateway.dynamic_routing.list_versions(route_id, account_id=account, gateway_id=gw)
out["versions_active"] = [v.active for v in versions.data.versions]
draft = versions.data.versions[0].version_id
one = cf.ai_gateway.dynamic_routing.get_version(draft, account_id=account, gateway_id=gw, id=route_id)
out["draft_is_valid"] = one.is_valid

oa = OpenAI(base_url=os.environ["TORII_BASE_URL"] + "/compat", api_key="sk-test", max_retries=0)


def call(plan):
    raw = oa.chat.completions.with_raw_response.create(
        model="dynamic/helpdesk", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"cf-aig-metadata": json.dumps({"plan": plan})},
    )
    raw.parse()
    return [raw.headers.get("cf-aig-provider"), raw.headers.get("cf-aig-model")]


out["before_deploy"] = {"free": call("free"), "pro": call("pro")}
cf.ai_gateway.dynamic_routing.create_deployment(route_id, account_id=account, gateway_id=gw, version_id=draft)
out["after_deploy_pro"] = call("pro")
deployments = cf.ai_gateway.dynamic_routing.list_deployments(route_id, account_id=account, gateway_id=gw)
out["deployments"] = len(deployments.data.deployments)

deleted = cf.ai_gateway.dynamic_routing.delete(route_id, account_id=account, gateway_id=gw)
out["deleted"] = deleted.name
out["after_delete"] = [r.name for r in cf.ai_gateway.dynamic_routing.list(gw, account_id=account).data.routes]
print(json.dumps(out))
