#!/usr/bin/env node
// Builds the browser runtime.
//
//   node runtime_js/build.mjs            dist/webbuild.js (ESM bundle, browser) + dist/types/*.d.ts,
//                                        dist/xgrammar.js (the grammar engine, loaded on first use by
//                                        grammar.ts) and dist/site-markdown.js (the chat page's markdown renderer)
//   node runtime_js/build.mjs --modules  only dist/modules/*.js: each module of MODULES as its own
//                                        ESM entry (shared code split into chunks), for node tests
//   node runtime_js/build.mjs --no-types skip the tsc declaration step
//
// The bundle includes @huggingface/tokenizers and @huggingface/jinja.

import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const src = path.join(here, "src");
const dist = path.join(root, "dist");
const args = new Set(process.argv.slice(2));
// The browser-independent modules the node unit tests import one by one.
const MODULES = ["errors", "config", "protocol", "sampling", "stop", "tokenizer", "sha256", "progress", "storage", "artifacts", "backend",
                 "metadata", "llm_chat_pipeline", "logprobs", "completions", "grammar", "tools", "tool_syntax", "embeddings"];

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  sourcemap: true,
  logLevel: "warning",
  legalComments: "linked",
};

async function buildModules() {
  const outdir = path.join(dist, "modules");
  rmSync(outdir, { recursive: true, force: true });
  await esbuild.build({
    ...common,
    entryPoints: MODULES.map((m) => path.join(src, `${m}.ts`)),
    outdir,
    splitting: true,
    platform: "neutral",
    mainFields: ["module", "main"],
    outExtension: { ".js": ".js" },
  });
}

// Node-only modules that TVM's JS runtime references for its node code paths; never used in a page.
const NODE_ONLY = ["fs", "path", "perf_hooks", "ws", "crypto", "url", "module"];

async function buildBundle() {
  for (const [entry, out] of [["index.ts", "webbuild.js"], ["worker.ts", "worker.js"], ["xgrammar_entry.ts", "xgrammar.js"]]) {
    await esbuild.build({
      ...common,
      entryPoints: [path.join(src, entry)],
      outfile: path.join(dist, out),
      platform: "browser",
      external: NODE_ONLY,
    });
  }
  // the chat page's markdown renderer (site/app.js imports it): marked + DOMPurify, not in the npm package
  await esbuild.build({
    ...common,
    entryPoints: [path.join(here, "site_markdown.ts")],
    outfile: path.join(dist, "site-markdown.js"),
    minify: true,
    platform: "browser",
  });
}

function buildTypes() {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", path.join(here, "tsconfig.json")], { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`tsc failed (exit ${r.status})`);
}

try {
  if (args.has("--modules")) {
    await buildModules();
  } else {
    await buildBundle();
    await buildModules();
    if (!args.has("--no-types")) buildTypes();
  }
} catch (err) {
  console.error(err.message ?? err);
  process.exit(1);
}
