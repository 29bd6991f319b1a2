// chat-config.json has one description, webbuild/schema/chat-config.schema.json: the build validates
// what it writes against it, the runtime (config.ts) what it reads. These tests check that the
// runtime's TypeScript interfaces follow from the schema, and that the runtime's checks are the schema's.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import ts from "typescript";

import { CHAT_CONFIG_FORMAT, chatConfigSchemaError, parseChatConfig } from "../../../dist/modules/config.js";
import { ModelLoadError } from "../../../dist/modules/errors.js";

const ROOT = new URL("../../../", import.meta.url);
const SCHEMA = JSON.parse(readFileSync(new URL("webbuild/schema/chat-config.schema.json", ROOT), "utf8"));
const WRITTEN = SCHEMA.$defs.written;
const CONFIG_TS = new URL("runtime_js/src/config.ts", ROOT);

/** interface name -> { property -> { optional, type } } from config.ts, types as written. */
function interfaces() {
  const source = ts.createSourceFile("config.ts", readFileSync(CONFIG_TS, "utf8"), ts.ScriptTarget.ES2022, true);
  const out = {};
  for (const node of source.statements) {
    if (!ts.isInterfaceDeclaration(node)) continue;
    const props = {};
    for (const m of node.members) {
      if (!ts.isPropertySignature(m)) continue;
      props[m.name.getText(source).replace(/^"(.*)"$/, "$1")] = { optional: Boolean(m.questionToken), type: norm(m.type.getText(source)) };
    }
    out[node.name.text] = props;
  }
  return out;
}

const norm = (text) => text.replace(/\s+/g, " ").replace(/;\s*}/g, " }").trim();
const resolve = (s) => (s.$ref ? { ...resolve(SCHEMA.$defs[s.$ref.replace("#/$defs/", "")]), ...s, $ref: undefined } : s);
const union = (parts) => [...new Set(parts)].join(" | ");

/** The TypeScript type a schema stands for; a titled object is the interface of that name. */
function tsType(schema, written = {}) {
  const s = resolve(schema);
  if ("const" in s) return JSON.stringify(s.const);
  if (s.enum) return union(s.enum.map((v) => JSON.stringify(v)));
  if (s.anyOf) return union(s.anyOf.map((x) => tsType(x)));
  if (s.title) return s.title;
  switch (s.type) {
    case "string": case "boolean": case "null": return s.type;
    case "integer": case "number": return "number";
    case "array": { const item = tsType(s.items); return item.includes(" ") ? `(${item})[]` : `${item}[]`; }
    case "object": {
      const props = Object.entries(s.properties ?? {});
      const required = new Set([...(s.required ?? []), ...(written.required ?? [])]);
      if (!props.length) return `Record<string, ${s.additionalProperties ? tsType(s.additionalProperties) : "unknown"}>`;
      const types = props.map(([, p]) => tsType(p));
      // properties all optional, of one type, and more keys allowed of that type: a Partial<Record>
      if (s.additionalProperties && !required.size && types.every((t) => t === tsType(s.additionalProperties))) {
        return `Partial<Record<${union(props.map(([k]) => JSON.stringify(k)))}, ${types[0]}>>`;
      }
      return `{ ${props.map(([k, p], i) => `${k}${required.has(k) ? "" : "?"}: ${types[i]}`).join("; ")} }`;
    }
    default: throw new Error(`no TypeScript type for schema ${JSON.stringify(schema)}`);
  }
}

/** Compare one interface with an object schema: same properties, optional where the build may omit one, same types. */
function checkInterface(found, name, schema, written = {}) {
  const s = resolve(schema);
  const props = found[name];
  assert.ok(props, `config.ts has no interface ${name} (schema title)`);
  assert.deepEqual(Object.keys(props).sort(), Object.keys(s.properties).sort(), `${name}: properties differ from the schema's`);
  const required = new Set([...(s.required ?? []), ...(written.required ?? [])]);
  for (const [key, sub] of Object.entries(s.properties)) {
    assert.equal(props[key].optional, !required.has(key), `${name}.${key}: optional in TypeScript iff the build may leave it out`);
    assert.equal(props[key].type, tsType(sub, written.properties?.[key]), `${name}.${key}: type differs from the schema's`);
    const r = resolve(sub);
    if (r.title) checkInterface(found, r.title, r, written.properties?.[key]);
  }
}

test("the ChatConfig interfaces follow from the schema (properties, optionality, types)", () => {
  checkInterface(interfaces(), SCHEMA.title, SCHEMA, WRITTEN);
});

test("the runtime's format constant is the schema's", () => {
  assert.equal(CHAT_CONFIG_FORMAT, SCHEMA.properties.format.const);
});

const BASE = {
  format: "webbuild-chat-config/1", model_id: "m", architecture: "llama", context_window_size: 256, prefill_chunk_size: 64,
  vocab_size: 320, tokenizer_files: ["tokenizer.json"], eos_token_ids: [2], sampling: { temperature: 0.7 },
};

test("every property the root schema requires is required by the runtime", () => {
  for (const key of SCHEMA.required) {
    const config = { ...BASE };
    delete config[key];
    assert.throws(() => parseChatConfig(config), (err) => err instanceof ModelLoadError && err.code === "model-load"
      && err.message.includes(key), key);
  }
});

test("each schema default is filled in, as a fresh copy", () => {
  const a = parseChatConfig({ ...BASE });
  for (const [key, sub] of Object.entries(SCHEMA.properties)) {
    if ("default" in sub) assert.deepEqual(a[key], sub.default, key);
  }
  assert.deepEqual(a.stop_token_ids, [2]);  // defaults to eos_token_ids
  assert.deepEqual(a.model_libs, { webgpu: "model.wasm" });  // defaults to {webgpu: model_lib}
  a.stop_strings.push("x");
  assert.deepEqual(parseChatConfig({ ...BASE }).stop_strings, []);
  assert.equal(parseChatConfig({ ...BASE, state: { kv_state: "rnn_state" } }).state.sliding_window, null);
});

test("a schema violation is a model-load error naming the URL, the field and the schema rule", () => {
  const url = "https://x/m/chat-config.json";
  const cases = [
    [{ ...BASE, format: "webbuild-chat-config/2" }, "format:"],
    [{ ...BASE, state: { kv_state: "lstm" } }, "state.kv_state:"],
    [{ ...BASE, state: { kv_state: "paged_kv_cache", sliding_window: 2.5 } }, "state.sliding_window:"],
    [{ ...BASE, tokenizer_files: ["vocab.json"] }, "tokenizer_files:"],
    [{ ...BASE, eos_token_ids: [-1] }, "eos_token_ids.0:"],
    [{ ...BASE, model_libs: { wasm: "../model-cpu.wasm" } }, "model_libs.wasm:"],
    [{ ...BASE, model_libs: { other: ".hidden" } }, "model_libs.other:"],
    [{ ...BASE, model_libs: { "wasm-threads": "t.wasm" } }, "wasm_threads:"],
    [{ ...BASE, model_libs: { "wasm-threads": "t.wasm" }, wasm_threads: { memory_pages: { initial: 9, maximum: 8 } } },
     "wasm_threads.memory_pages"],
    [{ ...BASE, sampling: "hot" }, "sampling:"],
    [{ ...BASE, add_bos_token: "yes" }, "add_bos_token:"],
    [{ ...BASE, prefill_chunk_size: 0 }, "prefill_chunk_size:"],
  ];
  for (const [config, field] of cases) {
    assert.throws(() => parseChatConfig(config, url), (err) => err instanceof ModelLoadError && err.code === "model-load"
      && err.url === url && err.message.startsWith(`${url}: ${field}`), field);
  }
  assert.match(chatConfigSchemaError({ ...BASE, state: { kv_state: "lstm" } }), /\(schema #\/properties\/state\/properties\/kv_state\/enum\)$/);
  assert.equal(chatConfigSchemaError(BASE), null);
  assert.throws(() => parseChatConfig(null), ModelLoadError);
  assert.throws(() => parseChatConfig([]), ModelLoadError);
});
