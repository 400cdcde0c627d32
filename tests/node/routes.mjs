// Cloudflare's TypeScript SDK on dynamic routes: every call of aiGateway.dynamicRouting against
// Torii, printing what the SDK hands back. Prints one JSON object.
import Cloudflare from "cloudflare";

const cf = new Cloudflare({ apiToken: process.env.TORII_TOKEN, baseURL: process.env.TORII_API, maxRetries: 0 });
const account_id = "local";
const gateway_id = "default";
const to = (elementId) => ({ elementId });
const elements = [
  { id: "start", type: "start", outputs: { next: to("m") } },
  { id: "m", type: "model", properties: { provider: "openai", model: "gpt-4o-mini", timeout: 5000, retries: 0 },
    outputs: { success: to("end"), fallback: to("end") } },
  { id: "end", type: "end", outputs: {} },
];
const out = {};
const made = await cf.aiGateway.dynamicRouting.create(gateway_id, { account_id, name: "ts", elements });
out.created = [made.name, made.version.active, made.elements.length];
const list = await cf.aiGateway.dynamicRouting.list(gateway_id, { account_id });
out.listed = list.data.routes.map((r) => r.name);
const got = await cf.aiGateway.dynamicRouting.get(made.id, { account_id, gateway_id });
out.got = got.deployment.version_id === got.version.version_id;
const renamed = await cf.aiGateway.dynamicRouting.update(made.id, { account_id, gateway_id, name: "ts2" });
out.renamed = renamed.route.name;
const version = await cf.aiGateway.dynamicRouting.createVersion(made.id, { account_id, gateway_id, elements });
out.version_elements = version.elements.length;
const versions = await cf.aiGateway.dynamicRouting.listVersions(made.id, { account_id, gateway_id });
out.versions = versions.data.versions.map((v) => v.active);
const one = await cf.aiGateway.dynamicRouting.getVersion(versions.data.versions[0].version_id, { account_id, gateway_id, id: made.id });
out.one = [one.active, JSON.parse(one.data).length];
const deployed = await cf.aiGateway.dynamicRouting.createDeployment(made.id, { account_id, gateway_id, version_id: one.version_id });
out.deployed = deployed.name;
const deployments = await cf.aiGateway.dynamicRouting.listDeployments(made.id, { account_id, gateway_id });
out.deployments = deployments.data.deployments.length;
const deleted = await cf.aiGateway.dynamicRouting.delete(made.id, { account_id, gateway_id });
out.deleted = deleted.name;
console.log(JSON.stringify(out));
