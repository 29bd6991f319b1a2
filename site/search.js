// The semantic-search demo: an embedding model from the server's catalog ranks the texts (one per
// line) by cosine similarity to a query, with the npm bundle's engine.embeddings.create as an app
// would call it. The texts are embedded in one batched call and kept while they and the model are
// unchanged; each search then embeds only the query. `?model=` picks the model folder (default the
// catalog's all-minilm-l6-v2-q0f32), `?backend=` the backend ("auto": WASM on a software adapter).
// Page state is mirrored in document.body.dataset.state ("idle" | "loading" | "ready" |
// "searching" | "error") so people and tests can see what the page is doing.
import { createEngine } from "/dist/webbuild.js";
import { clearError as clearErrorIn, listModels as listModelsIn, showError as showErrorIn, showProgress } from "./page_common.js";

const DEFAULT_MODEL = "all-minilm-l6-v2-q0f32";
const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), searchForm: $("search-form"), texts: $("texts"), query: $("query"), search: $("search"),
  stats: $("stats"), results: $("results"), progress: $("progress"), progressBar: $("progress-bar"),
  progressLabel: $("progress-label"), error: $("error"), errorTitle: $("error-title"),
  errorMessage: $("error-message"), errorFix: $("error-fix"),
};
const params = new URLSearchParams(location.search);
let engine = null;
let engineUrl = null;
let corpus = null;  // {key, texts, vectors}: the embedded texts for engineUrl

function setState(state) {
  document.body.dataset.state = state;
  ui.search.disabled = state === "loading" || state === "searching";
  ui.model.disabled = ui.search.disabled;
}

const showError = (err) => showErrorIn(ui, err);
const clearError = () => clearErrorIn(ui);

const listModels = () => listModelsIn(ui, { kind: "embedding", wanted: params.get("model") || DEFAULT_MODEL,
                                           fix: "build one with `python -m webbuild build all-minilm-l6-v2`" });
const onProgress = (event) => showProgress(ui, event);

/** The engine for the selected model, created on first use and replaced when the selection changes. */
async function selectedEngine() {
  const url = new URL(ui.model.value, location.href).href;
  if (engine && engineUrl === url) return engine;
  setState("loading");
  if (engine) await engine.unload();
  engine = null;
  corpus = null;
  const backend = params.get("backend") || "auto";
  const threads = params.get("threads") ? Number(params.get("threads")) : undefined;
  try {
    engine = await createEngine(url, { onProgress, worker: params.get("worker") !== "0", backend, threads });
  } finally {
    ui.progress.hidden = true;
  }
  engineUrl = url;
  document.body.dataset.backend = engine.backend;
  return engine;
}

/** `vector` scaled to unit length, so that a dot product is the cosine. */
function unit(vector) {
  const norm = Math.hypot(...vector) || 1;
  return vector.map((x) => x / norm);
}

async function embed(input) {
  const response = await engine.embeddings.create({ input });
  return response.data.map((d) => unit(d.embedding));
}

function showResults(ranked) {
  ui.results.replaceChildren(...ranked.map(({ text, score, index }) => {
    const li = document.createElement("li");
    Object.assign(li.dataset, { index: String(index), score: String(score) });
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = score.toFixed(4);
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(value, body);
    return li;
  }));
}

async function search(event) {
  event?.preventDefault();
  const texts = ui.texts.value.split("\n").map((line) => line.trim()).filter(Boolean);
  const query = ui.query.value.trim();
  if (!texts.length || !query) return;
  clearError();
  try {
    await selectedEngine();
    setState("searching");
    const started = performance.now();
    const key = texts.join("\n");
    const embedded = corpus?.key === key ? 0 : texts.length;
    if (embedded) corpus = { key, texts, vectors: await embed(texts) };
    const [q] = await embed([query]);
    const ranked = corpus.vectors
      .map((v, index) => ({ index, text: corpus.texts[index], score: v.reduce((s, x, i) => s + x * q[i], 0) }))
      .sort((a, b) => b.score - a.score);
    showResults(ranked);
    ui.stats.textContent = `${texts.length} texts (${embedded ? `${embedded} embedded` : "cached"}) + query in `
      + `${((performance.now() - started) / 1000).toFixed(2)} s · ${engine.backend === "wasm" ? "WASM (CPU)" : "WebGPU"}`;
    setState("ready");
  } catch (err) {
    showError(err);
    setState("error");
  }
}

ui.searchForm.addEventListener("submit", search);
setState("idle");
listModels().then(() => {
  if (params.get("autoload") === "1") search();
}, (err) => { showError(err); setState("error"); });
