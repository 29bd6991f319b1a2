// The npm package's public API is a curated list (runtime_js/src/index.ts): an export added or
// removed by accident fails here. Change these lists only together with index.ts, on purpose.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";
import ts from "typescript";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const entry = path.join(root, "runtime_js", "src", "index.ts");

/** Values in dist/webbuild.js. */
const VALUES = [
  "AbortedError", "ContextWindowExceededError", "IntegrityError", "InvalidRequestError", "ModelKindError", "ModelLoadError",
  "NoWebGPUError", "OutOfMemoryError", "ShaderF16Error", "StorageQuotaError", "ToolsUnsupportedError", "WebbuildError", "createEngine",
  "deleteCachedModel", "getModelCacheInfo",
];

/** Types in dist/types/index.d.ts (besides the values). */
const TYPES = [
  "Backend", "BackendChoice", "CacheKind", "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest",
  "ChatConfig", "ChatEngine", "ChatMessage", "ChoiceLogprobs", "Completion", "CompletionChoice",
  "CompletionChunk", "CompletionCreateRequest", "CompletionLogprobs", "CompletionRequest", "CompletionUsage", "CreateRequest", "EngineOptions",
  "CreateEmbeddingResponse", "Embedding", "EmbeddingConfig", "EmbeddingCreateParams", "EmbeddingCreateRequest",
  "ErrorCode", "FetchFn", "FinishReason", "FunctionTool", "LoadProgress", "ModelCacheInfo", "ModelCacheOptions", "ProgressCallback",
  "ProgressStage", "Role",
  "SamplingDefaults", "SerializedError", "ShardStore", "StateConfig", "TextContentPart", "TokenLogprob",
  "ToolCall", "ToolCallDelta", "ToolChoice", "TopLogprob", "UsageExtra",
];

test("the bundle (built as dist/webbuild.js is) exports exactly the public values", async () => {
  // built as build.mjs builds the bundle, in memory
  const result = await esbuild.build({
    entryPoints: [entry], bundle: true, format: "esm", target: "es2022", platform: "browser", write: false,
    outdir: path.join(root, "dist"), metafile: true, logLevel: "silent",
    external: ["fs", "path", "perf_hooks", "ws", "crypto"],
  });
  const [output] = Object.values(result.metafile.outputs).filter((o) => o.entryPoint);
  assert.deepEqual([...output.exports].sort(), [...VALUES].sort());
});

/** The names index.ts exports, read from its syntax; `export *` shows as "*" (it would hide what it adds). */
function declaredExports(file) {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, true);
  const names = [];
  const exported = (node) => ts.getCombinedModifierFlags(node) & ts.ModifierFlags.Export;
  for (const node of source.statements) {
    if (ts.isExportDeclaration(node)) {
      if (!node.exportClause) names.push("*");
      else if (ts.isNamespaceExport(node.exportClause)) names.push(node.exportClause.name.text);
      else for (const element of node.exportClause.elements) names.push(element.name.text);
    } else if (ts.isVariableStatement(node) && exported(node)) {
      for (const d of node.declarationList.declarations) names.push(d.name.getText(source));
    } else if ((ts.isFunctionDeclaration(node) || ts.isClassDeclaration(node) || ts.isInterfaceDeclaration(node) ||
                ts.isTypeAliasDeclaration(node) || ts.isEnumDeclaration(node)) && exported(node) && node.name) {
      names.push(node.name.text);
    } else if (ts.isExportAssignment(node)) {
      names.push("default");
    }
  }
  return names;
}

test("index.ts declares exactly the public values and types, each named (no export *)", () => {
  assert.deepEqual(declaredExports(entry).sort(), [...VALUES, ...TYPES].sort());
});
