// Tool calls: the syntax table and its parsers (tool_syntax.ts), request normalization, the
// streaming split into content and delta.tool_calls (tools.ts), and the calls' grammar checked on
// the real xgrammar engine (dist/xgrammar.js).
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  deserializeError, InvalidRequestError, serializeError, ToolsUnsupportedError,
} from "../../../dist/modules/errors.js";
import { compactJsonContents, loadXGrammar } from "../../../dist/modules/grammar.js";
import { buildChatCompletion, buildChunk, validateRequest } from "../../../dist/modules/protocol.js";
import { Tokenizer } from "../../../dist/modules/tokenizer.js";
import {
  callFrame, detectToolSyntax, findCall, jsonValueEnd, parseCallBody, TOOL_SYNTAXES,
} from "../../../dist/modules/tool_syntax.js";
import {
  mergeToolCallDeltas, normalizeTools, ToolCallChunks, ToolCallStream, toolGrammar, toolSyntaxFor,
} from "../../../dist/modules/tools.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const XGRAMMAR = path.join(here, "../../../dist/xgrammar.js");
globalThis.require ??= createRequire(import.meta.url);
globalThis.__filename ??= XGRAMMAR;

const syntax = (id) => TOOL_SYNTAXES.find((s) => s.id === id);
const HERMES = syntax("hermes"), MISTRAL = syntax("mistral"), LLAMA = syntax("llama3_json");

const WEATHER = { type: "function", function: { name: "get_weather", description: "Weather in a city", parameters: {
  type: "object", properties: { city: { type: "string" }, unit: { enum: ["c", "f"] } }, required: ["city"] } } };
const ADD = { type: "function", function: { name: "add", parameters: {
  type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } };

// A Hermes-style template with tools (written for these tests), and one that never reads them.
const TOOLS_TEMPLATE = "{% if tools %}<|im_start|>system\nTools:\n{% for t in tools %}{{ t.function.name }}\n{% endfor %}" +
  "Call one as <tool_call>\n{\"name\": ..., \"arguments\": ...}\n</tool_call><|im_end|>\n{% endif %}" +
  "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}" +
  "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": " +
  "{{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}{% endif %}" +
  "{% if m.tool_call_id %} [{{ m.tool_call_id }}]{% endif %}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const PLAIN_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
const LLAMA_TEMPLATE = "{% if tools %}Respond in the format {\"name\": function name, \"parameters\": dictionary of argument " +
  "name and its value}.{% endif %}";
const MISTRAL_TEMPLATE = "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}" +
  "{% if m.tool_calls %}[TOOL_CALLS]{% endif %}";

test("the syntax is detected from the template text, never from a model name", () => {
  assert.equal(detectToolSyntax(TOOLS_TEMPLATE).id, "hermes");
  assert.equal(detectToolSyntax(LLAMA_TEMPLATE).id, "llama3_json");
  assert.equal(detectToolSyntax(MISTRAL_TEMPLATE).id, "mistral");
  assert.equal(detectToolSyntax(PLAIN_TEMPLATE), null);
  assert.equal(toolSyntaxFor(TOOLS_TEMPLATE).id, "hermes");
  for (const [template, reason] of [[PLAIN_TEMPLATE, "no-tools-variable"], [null, "no-tools-variable"],
                                    ["{% if tools %}{{ tools }}{% endif %}", "unknown-syntax"]]) {
    assert.throws(() => toolSyntaxFor(template),
                  (e) => e instanceof ToolsUnsupportedError && e.code === "tools-unsupported" && e.details.reason === reason);
  }
});

test("jsonValueEnd skips strings and escapes; -1 while the value is open", () => {
  const text = '{"a": "}\\"]", "b": [1, {"c": 2}]} tail';
  assert.equal(jsonValueEnd(text, 0), text.indexOf(" tail"));
  assert.equal(jsonValueEnd('{"a": "}"', 0), -1);
  assert.equal(jsonValueEnd('[{"x": 1}, ', 0), -1);
});

test("findCall and parseCallBody read each syntax's calls", () => {
  const hermes = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call> after';
  const found = findCall(HERMES, hermes);
  assert.equal(hermes.slice(found.end), " after");
  assert.deepEqual(parseCallBody(HERMES, found.body), [{ name: "add", arguments: { a: 1, b: 2 } }]);
  assert.equal(findCall(HERMES, '<tool_call>\n{"name": "add", "arguments": {"a": 1'), "incomplete");
  assert.equal(findCall(HERMES, '<tool_call>\n{"name": "add"}\n</tool'), "incomplete");
  assert.equal(findCall(HERMES, "<tool_call> not json"), "malformed");
  assert.equal(findCall(HERMES, '<tool_call>{"name": "add"} </other>'), "malformed");

  const llama = '{"name": "get_weather", "parameters": {"city": "Oslo"}}';
  const l = findCall(LLAMA, llama);
  assert.equal(l.end, llama.length);
  assert.deepEqual(parseCallBody(LLAMA, l.body), [{ name: "get_weather", arguments: { city: "Oslo" } }]);

  const mistral = '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]';
  const m = findCall(MISTRAL, mistral);
  assert.deepEqual(parseCallBody(MISTRAL, m.body).map((c) => c.name), ["add", "get_weather"]);

  assert.equal(parseCallBody(HERMES, '{"arguments": {}}'), null, "no name");
  assert.equal(parseCallBody(HERMES, '{"name": "add", "arguments": [1]}'), null, "arguments not an object");
  assert.equal(parseCallBody(MISTRAL, '{"name": "add"}'), null, "not a list");
  assert.equal(parseCallBody(HERMES, "{bad json}"), null);
});

test("callFrame writes the call around its arguments as the parser reads it back", () => {
  for (const s of TOOL_SYNTAXES) {
    const { begin, end } = callFrame(s, "add");
    assert.ok(begin.startsWith(s.trigger), `${s.id}: the call begins with the trigger`);
    const text = begin + '{"a":1,"b":2}' + end;
    const found = findCall(s, text);
    assert.equal(found.end, text.length, s.id);
    assert.deepEqual(parseCallBody(s, found.body), [{ name: "add", arguments: { a: 1, b: 2 } }], s.id);
  }
});

function runStream(s, pieces) {
  let n = 0;
  const stream = new ToolCallStream(s, () => `call_${n++}`);
  let content = "";
  const deltas = [];
  for (const p of pieces) {
    const out = stream.push(p);
    content += out.content;
    deltas.push(...out.toolCalls);
  }
  const end = stream.flush();
  content += end.content;
  deltas.push(...end.toolCalls);
  const calls = [];
  mergeToolCallDeltas(calls, deltas);
  return { content, deltas, calls };
}

test("ToolCallStream: text before a call is content; each call is an id+name delta, then an arguments delta", () => {
  const text = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>';
  for (const pieces of [[text], [...text], text.match(/.{1,7}/gs)]) {
    const { content, deltas, calls } = runStream(HERMES, pieces);
    assert.equal(content, "Let me check.");
    assert.deepEqual(deltas[0], { index: 0, id: "call_0", type: "function", function: { name: "get_weather", arguments: "" } });
    assert.deepEqual(deltas[1], { index: 0, function: { arguments: '{"city":"Paris"}' } });
    assert.deepEqual(calls, [
      { id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
      { id: "call_1", type: "function", function: { name: "add", arguments: '{"a":2,"b":3}' } },
    ]);
  }
});

test("ToolCallStream: a trigger prefix is held back, a false start is content, an unfinished call is content", () => {
  const stream = new ToolCallStream(HERMES, () => "id");
  assert.deepEqual(stream.push("a <tool"), { content: "a ", toolCalls: [] });  // "<tool" may start "<tool_call>"
  assert.deepEqual(stream.push("s> b"), { content: "<tools> b", toolCalls: [] });
  assert.deepEqual(runStream(HERMES, ["x <tool_call> nope"]).content, "x <tool_call> nope");
  assert.deepEqual(runStream(HERMES, ['<tool_call>\n{"name": "add", "argu']), {
    content: '<tool_call>\n{"name": "add", "argu', deltas: [], calls: [] });
  assert.equal(runStream(HERMES, ["plain answer\n"]).content, "plain answer\n", "no call: trailing whitespace kept");
  assert.equal(runStream(LLAMA, ['{"name": "add", "parameters": {"a": 1, "b": 1}}']).calls[0].function.arguments, '{"a":1,"b":1}');
});

test("normalizeTools: tools, tool_choice and parallel_tool_calls checked", () => {
  assert.equal(normalizeTools({}), null);
  assert.equal(normalizeTools({ tools: [], tool_choice: "none" }), null);
  assert.deepEqual(normalizeTools({ tools: [WEATHER] }), { tools: [WEATHER], choice: "auto", parallel: true });
  assert.deepEqual(normalizeTools({ tools: [WEATHER, ADD], tool_choice: { type: "function", function: { name: "add" } },
                                    parallel_tool_calls: false }).choice, { name: "add" });
  const cases = [
    [{ tools: {} }, "tools"],
    [{ tools: [{ type: "code" }] }, "tools[0].type"],
    [{ tools: [{ type: "function", function: { name: "bad name" } }] }, "tools[0].function.name"],
    [{ tools: [WEATHER, WEATHER] }, "tools[1].function.name"],
    [{ tools: [{ type: "function", function: { name: "x", parameters: [] } }] }, "tools[0].function.parameters"],
    [{ tools: [WEATHER], tool_choice: "always" }, "tool_choice"],
    [{ tools: [WEATHER], tool_choice: { type: "function", function: { name: "add" } } }, "tool_choice.function.name"],
    [{ tool_choice: "required" }, "tool_choice"],
    [{ tools: [WEATHER], parallel_tool_calls: "no" }, "parallel_tool_calls"],
  ];
  for (const [req, field] of cases) {
    assert.throws(() => normalizeTools(req), (e) => e instanceof InvalidRequestError && e.details.field === field, field);
  }
});

test("validateRequest: tool messages and assistant tool_calls (arguments as a JSON string) in the template's shape", () => {
  const req = validateRequest({
    tools: [WEATHER],
    messages: [
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [
        { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }] },
      { role: "tool", tool_call_id: "call_1", content: "18 C" },
    ],
  });
  assert.deepEqual(req.messages[1], { role: "assistant", content: "", tool_calls: [
    { id: "call_1", type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] });
  assert.deepEqual(req.messages[2], { role: "tool", content: "18 C", tool_call_id: "call_1" });
  assert.equal(req.tools.choice, "auto");
  const bad = [
    [{ messages: [{ role: "tool", content: "x" }] }, "messages[0].tool_call_id"],
    [{ messages: [{ role: "assistant", tool_calls: [{ id: "c", function: { name: "f", arguments: "{" } }] }] },
     "messages[0].tool_calls[0].function.arguments"],
    [{ messages: [{ role: "user", content: "x" }], tools: [WEATHER], response_format: { type: "json_object" } }, "response_format"],
  ];
  for (const [request, field] of bad) {
    assert.throws(() => validateRequest(request), (e) => e instanceof InvalidRequestError && e.details.field === field, field);
  }
});

test("the template gets `tools` and the messages' tool_calls / tool_call_id", () => {
  const tokenizerJson = { version: "1.0", added_tokens: [], normalizer: null, pre_tokenizer: { type: "Whitespace" },
    post_processor: null, decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordLevel", vocab: { "<unk>": 0 }, unk_token: "<unk>" } };
  const tok = new Tokenizer(tokenizerJson, {}, { chat_template: TOOLS_TEMPLATE });
  const { messages, tools } = validateRequest({ tools: [WEATHER], messages: [
    { role: "user", content: "hi" },
    { role: "assistant", tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }] },
    { role: "tool", tool_call_id: "c1", content: "sunny" }] });
  const text = tok.applyChatTemplate(messages, { tools: tools.tools });
  assert.match(text, /^<\|im_start\|>system\nTools:\nget_weather\n/);
  assert.match(text, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": ?"Oslo"\}\}\n<\/tool_call>/);
  assert.match(text, /<\|im_start\|>tool\nsunny \[c1\]<\|im_end\|>/);
  assert.doesNotMatch(tok.applyChatTemplate(messages), /Tools:/, "no tools: the template's tools branch is not taken");
});

/** Whether xgrammar's grammar for `req`'s tools (compact JSON, as the engine compiles it) accepts `text`. */
async function accepts(req, texts) {
  const xg = await loadXGrammar(XGRAMMAR);
  const tag = toolGrammar(HERMES, normalizeTools(req));
  const grammar = await xg.Grammar.fromStructuralTag(await compactJsonContents(xg, tag));
  const out = [];
  for (const t of texts) out.push(await xg.Testings.isGrammarAcceptString(grammar, t));
  grammar.dispose();
  return out;
}

const call = (name, args) => `<tool_call>\n{"name": "${name}", "arguments": ${args}}\n</tool_call>`;

test("grammar, auto: free text, or calls whose name is a tool's and whose arguments match its schema", async () => {
  const [free, ok, two, badName, badArgs, missing, spaced] = await accepts({ tools: [WEATHER, ADD] }, [
    "Just text.", "Sure. " + call("get_weather", '{"city":"Paris","unit":"c"}'),
    call("add", '{"a":1,"b":2}') + "\n" + call("add", '{"a":3,"b":4}'),
    call("delete_all", "{}"), call("add", '{"a":1,"b":"x"}'), call("get_weather", '{"unit":"c"}'),
    call("add", '{"a": 1, "b": 2}'),
  ]);
  assert.deepEqual({ free, ok, two, badName, badArgs, missing, spaced },
                   { free: true, ok: true, two: true, badName: false, badArgs: false, missing: false, spaced: false });
});

test("grammar, required / named / no parallel calls", async () => {
  const weather = call("get_weather", '{"city":"Rome"}'), add = call("add", '{"a":1,"b":2}');
  assert.deepEqual(await accepts({ tools: [WEATHER, ADD], tool_choice: "required" }, ["text", weather, add, `${add}\n${weather}`]),
                   [false, true, true, true]);
  assert.deepEqual(await accepts({ tools: [WEATHER, ADD], tool_choice: { type: "function", function: { name: "add" } } },
                                 [weather, add]), [false, true]);
  assert.deepEqual(await accepts({ tools: [WEATHER, ADD], parallel_tool_calls: false }, [add, `${add}\n${add}`]), [true, false]);
  assert.deepEqual(await accepts({ tools: [WEATHER, ADD], tool_choice: "required", parallel_tool_calls: false },
                                 [add, `${add}\n${add}`]), [true, false]);
  assert.equal(toolGrammar(HERMES, normalizeTools({ tools: [ADD], tool_choice: "none" })), null, "none: free text");
});

test("ToolCallChunks: the pipeline's content chunks become OpenAI tool-call chunks; finish_reason tool_calls", () => {
  const meta = { id: "chatcmpl-x", created: 1, model: "m" };
  let n = 0;
  const calls = new ToolCallChunks(HERMES, normalizeTools({ tools: [ADD] }), () => `call_${n++}`);
  const out = [];
  const emit = calls.wrap((c) => out.push(c));
  emit(buildChunk(meta, { index: 0, role: "assistant", content: "" }));
  for (const piece of ["Ok", " <tool_", 'call>\n{"name": "add", "arguments": {"a":1,', '"b":2}}\n</tool_call>']) {
    emit(buildChunk(meta, { index: 0, content: piece }));
  }
  emit(buildChunk(meta, { index: 0, finishReason: "stop" }));
  const deltas = out.map((c) => c.choices[0].delta);
  assert.deepEqual(deltas, [
    { role: "assistant", content: "" }, { content: "Ok" },
    { tool_calls: [{ index: 0, id: "call_0", type: "function", function: { name: "add", arguments: "" } },
                   { index: 0, function: { arguments: '{"a":1,"b":2}' } }] },
    {},
  ]);
  assert.deepEqual(out.map((c) => c.choices[0].finish_reason), [null, null, null, "tool_calls"]);
  assert.equal(calls.finishReason(0, "stop"), "tool_calls");
  assert.equal(calls.finishReason(0, "length"), "length");
  assert.equal(calls.finishReason(1, "stop"), "stop", "another choice made no call");

  const whole = buildChatCompletion(meta, [{ content: "", finishReason: "tool_calls", logprobs: null,
    toolCalls: [{ id: "call_0", type: "function", function: { name: "add", arguments: "{}" } }] }], {});
  assert.equal(whole.choices[0].message.content, null, "only calls: content is null, as OpenAI's");
  assert.equal(whole.choices[0].message.tool_calls.length, 1);
});

test("ToolsUnsupportedError crosses a worker's postMessage with its class, code and reason", () => {
  const sent = serializeError(new ToolsUnsupportedError("no tools", "unknown-syntax"));
  const back = deserializeError(structuredClone(sent));
  assert.ok(back instanceof ToolsUnsupportedError);
  assert.equal(back.code, "tools-unsupported");
  assert.equal(back.reason, "unknown-syntax");
  assert.equal(back.message, "no tools");
});

test("ToolCallChunks keeps each choice (n > 1) apart", () => {
  const meta = { id: "chatcmpl-x", created: 1, model: "m" };
  let n = 0;
  const calls = new ToolCallChunks(HERMES, normalizeTools({ tools: [ADD] }), () => `call_${n++}`);
  const out = [];
  const emit = calls.wrap((c) => out.push(c));
  emit(buildChunk(meta, { index: 0, content: call("add", '{"a":1,"b":1}') }));
  emit(buildChunk(meta, { index: 0, finishReason: "stop" }));
  emit(buildChunk(meta, { index: 1, content: "no call <tool" }));
  emit(buildChunk(meta, { index: 1, finishReason: "stop" }));
  assert.deepEqual(out.map((c) => [c.choices[0].index, c.choices[0].delta, c.choices[0].finish_reason]), [
    [0, { tool_calls: [{ index: 0, id: "call_0", type: "function", function: { name: "add", arguments: "" } },
                       { index: 0, function: { arguments: '{"a":1,"b":1}' } }] }, null],
    [0, {}, "tool_calls"],
    [1, { content: "no call " }, null],
    [1, { content: "<tool" }, null],
    [1, {}, "stop"],
  ]);
});
