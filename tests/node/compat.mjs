// The official OpenAI Node SDK on Torii's unified API (/compat): plain, streamed and with
// tools, for every model in TORII_MODELS. Prints one JSON object.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.TORII_BASE_URL + "/compat", apiKey: "sk-node-key", maxRetries: 0 });
const tools = [{ type: "function", function: { name: "get_weather", description: "Weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello?" }];
const out = {};
for (const model of process.env.TORII_MODELS.split(",")) {
  const seen = {};
  const plain = await client.chat.completions.create({ model, messages });
  seen.text = plain.choices[0].message.content;
  let text = "";
  const stream = await client.chat.completions.create({ model, messages, stream: true });
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  seen.stream_text = text;
  const called = await client.chat.completions.create({ model, messages, tools });
  const call = called.choices[0].message.tool_calls[0];
  seen.tool = [call.function.name, JSON.parse(call.function.arguments)];
  let args = "";
  const toolStream = await client.chat.completions.create({ model, messages, tools, stream: true });
  for await (const chunk of toolStream) {
    for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
      args += tc.function?.arguments ?? "";
    }
  }
  seen.stream_tool_args = JSON.parse(args);
  out[model] = seen;
}
console.log(JSON.stringify(out));
