// The chat page: pick a model and a store, see its download size and whether it is cached, load it
// with a progress bar, stream answers rendered as markdown, stop, start over, remove it from the cache.
// JSON mode (`&json=1`) asks for one JSON object (response_format json_object) and shows the answer
// pretty-printed in a ```json code block.
// Page state is mirrored in document.body.dataset.state ("idle" | "loading" | "ready" |
// "generating" | "error") so people and tests can see what the page is doing.
import { createEngine, deleteCachedModel, getModelCacheInfo } from "/dist/webbuild.js";
import { renderMarkdownInto } from "/dist/site-markdown.js";
import { clearError as clearErrorIn, listModels as listModelsIn, showError as showErrorIn, showProgress } from "./page_common.js";

const $ = (id) => document.getElementById(id);
const ui = {
  modelForm: $("model-form"), model: $("model"), cache: $("cache"), load: $("load"), removeCache: $("remove-cache"),
  modelInfo: $("model-info"), temperature: $("temperature"), topP: $("top-p"), repetitionPenalty: $("repetition-penalty"),
  progress: $("progress"), progressBar: $("progress-bar"), progressLabel: $("progress-label"),
  error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), errorFix: $("error-fix"),
  messages: $("messages"), chatForm: $("chat-form"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  newChat: $("new-chat"), stats: $("stats"), jsonMode: $("json-mode"),
};
const params = new URLSearchParams(location.search);
let engine = null;
let history = [];
let abort = null;
let cacheInfo = null;  // getModelCacheInfo's answer for the selected model and store
let infoRequest = 0;   // only the latest lookup updates the page

function setState(state) {
  document.body.dataset.state = state;
  const ready = state === "ready";
  ui.prompt.disabled = !ready && state !== "generating";
  ui.send.disabled = !ready;
  ui.stop.disabled = state !== "generating";
  ui.newChat.disabled = !(ready && history.length);
  ui.load.disabled = state === "loading" || state === "generating";
  ui.cache.disabled = state === "loading";
  ui.removeCache.disabled = state === "loading" || !(cacheInfo?.cachedShards > 0);
}

const showError = (err) => showErrorIn(ui, err);
const clearError = () => clearErrorIn(ui);

function formatBytes(n) {
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/** The selected model's download size and how much of it the selected store holds. */
async function showCacheInfo() {
  const request = ++infoRequest;
  const url = ui.model.value;
  cacheInfo = null;
  ui.modelInfo.textContent = "";
  for (const key of ["downloadBytes", "cached", "cachedShards"]) delete ui.modelInfo.dataset[key];
  setState(document.body.dataset.state);
  if (!url) return;
  let info;
  try {
    info = await getModelCacheInfo(new URL(url, location.href).href, { cache: ui.cache.value });
  } catch (err) {
    if (request === infoRequest) ui.modelInfo.textContent = `Size unknown (${err?.message ?? err})`;
    return;
  }
  if (request !== infoRequest) return;
  cacheInfo = info;
  const where = ui.cache.options[ui.cache.selectedIndex].text;
  const status = ui.cache.value === "none" ? "not stored between visits"
    : info.cached ? `cached (${where})`
      : info.cachedShards ? `${info.cachedShards} of ${info.shards} shards cached (${where})` : "not cached";
  ui.modelInfo.textContent = `Download ${formatBytes(info.downloadBytes)} · ${status}`;
  Object.assign(ui.modelInfo.dataset, {
    downloadBytes: String(info.downloadBytes), cached: String(info.cached), cachedShards: String(info.cachedShards),
  });
  setState(document.body.dataset.state);
}

async function removeFromCache() {
  clearError();
  ui.removeCache.disabled = true;
  try {
    await deleteCachedModel(new URL(ui.model.value, location.href).href, { cache: ui.cache.value });
  } catch (err) {
    showError(err);
  }
  await showCacheInfo();
}

/** A chat bubble: user text stays plain text; assistant text is rendered as markdown. */
function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  if (role === "assistant") renderMarkdownInto(li, text);
  else li.textContent = text;
  ui.messages.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

/** `text` as a markdown code block: a fence longer than any run of backticks inside it. */
function codeFence(text, lang) {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  return `${fence}${lang}\n${text}\n${fence}`;
}

/** A JSON-mode answer as a ```json code block: pretty-printed when it parses, otherwise (still
 * streaming, or cut off by max_tokens) as it came. `bubble.dataset.json` says which ("pretty" or "raw"). */
function jsonMarkdown(text, bubble) {
  let pretty = null;
  try {
    pretty = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // not (yet) JSON: shown as it is
  }
  bubble.dataset.json = pretty === null ? "raw" : "pretty";
  return codeFence(pretty ?? text, "json");
}

/** Renders a streaming answer into `bubble` at most once per animation frame (or 100 ms, when
 * frames are throttled, e.g. a hidden tab); `finish` renders the final text at once. `json`: the
 * answer is a JSON-mode answer (see jsonMarkdown). */
function markdownStream(bubble, json = false) {
  let text = "";
  let pending = false;
  const render = () => {
    pending = false;
    const atBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
    renderMarkdownInto(bubble, json ? jsonMarkdown(text, bubble) : text);
    if (atBottom) bubble.scrollIntoView({ block: "end" });
  };
  const flush = () => { if (pending) render(); };
  return {
    update(next) {
      text = next;
      if (pending) return;
      pending = true;
      requestAnimationFrame(flush);
      setTimeout(flush, 100);
    },
    finish(final) {
      text = final;
      render();
    },
  };
}

const listModels = () => listModelsIn(ui, { kind: "chat", wanted: params.get("model"), fix: "build one with `make model`" });

function onProgress(event) {
  if (event.stage === "ready") ui.stats.title = event.fallbackDetail ?? "";
  showProgress(ui, event);
}

/** The sampling controls show the loaded model's defaults (its chat-config.json `sampling`). */
function showSamplingDefaults(sampling) {
  ui.temperature.value = String(sampling.temperature);
  ui.topP.value = String(sampling.top_p);
  ui.repetitionPenalty.value = String(sampling.repetition_penalty);
}

/** A control's value, or the loaded model's default when the field is empty or not a number. */
function control(input, fallback) {
  const value = input.value.trim() === "" ? NaN : Number(input.value);
  return Number.isFinite(value) ? value : fallback;
}

async function loadModel(event) {
  event?.preventDefault();
  clearError();
  setState("loading");
  try {
    if (engine) await engine.unload();
    engine = null;
    history = [];
    ui.messages.replaceChildren();
    const useWorker = params.get("worker") !== "0";
    const backend = params.get("backend") || "auto";
    const threads = params.get("threads") ? Number(params.get("threads")) : undefined;
    engine = await createEngine(new URL(ui.model.value, location.href).href,
                                { onProgress, worker: useWorker, backend, threads, cache: ui.cache.value });
    document.body.dataset.backend = engine.backend;
    document.body.dataset.fallbackReason = engine.fallbackReason ?? "";
    showSamplingDefaults(engine.config.sampling);
    ui.progress.hidden = true;
    setState("ready");
    ui.prompt.focus();
  } catch (err) {
    ui.progress.hidden = true;
    showError(err);
    setState("error");
  }
  showCacheInfo();
}

async function send(event) {
  event?.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || !engine || document.body.dataset.state !== "ready") return;
  clearError();
  ui.prompt.value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  const json = ui.jsonMode.checked;
  if (json) bubble.dataset.format = "json";
  const view = markdownStream(bubble, json);
  abort = new AbortController();
  setState("generating");
  const defaults = engine.config.sampling;
  let answer = "";
  try {
    const stream = await engine.chat.completions.create({
      messages: history, stream: true, stream_options: { include_usage: true },
      temperature: control(ui.temperature, defaults.temperature),
      top_p: control(ui.topP, defaults.top_p),
      repetition_penalty: control(ui.repetitionPenalty, defaults.repetition_penalty),
      max_tokens: params.get("max_tokens") ? Number(params.get("max_tokens")) : 512,
      ...(json ? { response_format: { type: "json_object" } } : {}),
      signal: abort.signal,
    });
    let usage = null;
    for await (const chunk of stream) {
      answer += chunk.choices[0]?.delta?.content ?? "";
      view.update(answer);
      if (chunk.usage) usage = chunk.usage;
    }
    if (usage) {
      const { decode_tokens_per_s: decode, prefill_tokens_per_s: prefill, time_to_first_token_s: ttft, backend, threads } = usage.extra;
      ui.stats.textContent = `${usage.completion_tokens} tokens · decode ${decode.toFixed(1)} tok/s`
        + ` · prefill ${prefill.toFixed(1)} tok/s · first token ${ttft.toFixed(2)} s · ${backend === "wasm" ? `WASM (CPU, ${threads ?? 1} thread${threads > 1 ? "s" : ""})` : "WebGPU"}`
        + (engine.fallbackReason === "software-adapter" ? " · WebGPU here is a software adapter" : "");
    }
  } catch (err) {
    if (err?.code !== "aborted") showError(err);
  } finally {
    view.finish(answer);
    history.push({ role: "assistant", content: answer });
    bubble.dataset.done = "true";
    abort = null;
    setState(engine ? "ready" : "error");
  }
}

ui.modelForm.addEventListener("submit", loadModel);
ui.model.addEventListener("change", showCacheInfo);
ui.cache.addEventListener("change", showCacheInfo);
ui.removeCache.addEventListener("click", removeFromCache);
ui.chatForm.addEventListener("submit", send);
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
});
ui.stop.addEventListener("click", () => abort?.abort());
ui.jsonMode.addEventListener("change", () => {  // the toggle's state stays in the URL (&json=1)
  if (ui.jsonMode.checked) params.set("json", "1");
  else params.delete("json");
  const query = params.toString();
  window.history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
});
ui.newChat.addEventListener("click", async () => {
  history = [];
  ui.messages.replaceChildren();
  ui.stats.textContent = "";
  await engine?.resetChat();
  setState("ready");
});

if (["cache", "indexeddb", "opfs", "none"].includes(params.get("cache"))) ui.cache.value = params.get("cache");
ui.jsonMode.checked = params.get("json") === "1";
setState("idle");
listModels().then(() => {
  showCacheInfo();
  if (params.get("autoload") === "1") loadModel();
}, showError);
