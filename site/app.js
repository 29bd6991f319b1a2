// The chat page: pick a model, load it with a progress bar, stream answers, stop, start over.
// Page state is mirrored in document.body.dataset.state ("idle" | "loading" | "ready" |
// "generating" | "error") so people and tests can see what the page is doing.
import { createEngine } from "/dist/webbuild.js";

const $ = (id) => document.getElementById(id);
const ui = {
  modelForm: $("model-form"), model: $("model"), load: $("load"), temperature: $("temperature"),
  progress: $("progress"), progressBar: $("progress-bar"), progressLabel: $("progress-label"),
  error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), errorFix: $("error-fix"),
  messages: $("messages"), chatForm: $("chat-form"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  newChat: $("new-chat"), stats: $("stats"),
};
const params = new URLSearchParams(location.search);
let engine = null;
let history = [];
let abort = null;

function setState(state) {
  document.body.dataset.state = state;
  const ready = state === "ready";
  ui.prompt.disabled = !ready && state !== "generating";
  ui.send.disabled = !ready;
  ui.stop.disabled = state !== "generating";
  ui.newChat.disabled = !(ready && history.length);
  ui.load.disabled = state === "loading" || state === "generating";
}

function showError(err) {
  ui.error.hidden = false;
  ui.error.dataset.code = err?.code ?? "unknown";
  ui.errorTitle.textContent = err?.code ? `Error (${err.code})` : "Error";
  ui.errorMessage.textContent = err?.message ?? String(err);
  ui.errorFix.textContent = err?.fix ? `How to fix: ${err.fix}` : "";
}

function clearError() {
  ui.error.hidden = true;
  delete ui.error.dataset.code;
}

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  ui.messages.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

async function listModels() {
  const response = await fetch("/api/models");
  const { models } = await response.json();
  ui.model.replaceChildren();
  for (const m of models.filter((entry) => entry.target === "webgpu")) {
    const option = new Option(m.error ? `${m.id} (unavailable)` : m.id, m.url);
    option.disabled = Boolean(m.error);
    ui.model.append(option);
  }
  if (!ui.model.options.length) showError({ message: "No models are being served.", fix: "build one with `make model`" });
  const wanted = params.get("model");
  const match = models.find((m) => m.id === wanted);
  if (match) ui.model.value = match.url;
}

function onProgress(event) {
  ui.progress.hidden = false;
  const { stage, file, loaded, total } = event;
  ui.progressLabel.textContent = `${stage}${file ? ` ${file}` : ""}`;
  if (total) ui.progressBar.value = loaded / total;
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
    engine = await createEngine(new URL(ui.model.value, location.href).href, { onProgress, worker: useWorker, backend, threads });
    document.body.dataset.backend = engine.backend;
    ui.progress.hidden = true;
    setState("ready");
    ui.prompt.focus();
  } catch (err) {
    ui.progress.hidden = true;
    showError(err);
    setState("error");
  }
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
  abort = new AbortController();
  setState("generating");
  let answer = "";
  try {
    const stream = await engine.chat.completions.create({
      messages: history, stream: true, stream_options: { include_usage: true }, temperature: Number(ui.temperature.value),
      max_tokens: params.get("max_tokens") ? Number(params.get("max_tokens")) : 512,
      signal: abort.signal,
    });
    let usage = null;
    for await (const chunk of stream) {
      answer += chunk.choices[0]?.delta?.content ?? "";
      bubble.textContent = answer;
      if (chunk.usage) usage = chunk.usage;
    }
    if (usage) {
      const { decode_tokens_per_s: decode, prefill_tokens_per_s: prefill, time_to_first_token_s: ttft, backend, threads } = usage.extra;
      ui.stats.textContent = `${usage.completion_tokens} tokens · decode ${decode.toFixed(1)} tok/s`
        + ` · prefill ${prefill.toFixed(1)} tok/s · first token ${ttft.toFixed(2)} s · ${backend === "wasm" ? `WASM (CPU, ${threads ?? 1} thread${threads > 1 ? "s" : ""})` : "WebGPU"}`;
    }
  } catch (err) {
    if (err?.code !== "aborted") showError(err);
  } finally {
    history.push({ role: "assistant", content: answer });
    bubble.dataset.done = "true";
    abort = null;
    setState(engine ? "ready" : "error");
  }
}

ui.modelForm.addEventListener("submit", loadModel);
ui.chatForm.addEventListener("submit", send);
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
});
ui.stop.addEventListener("click", () => abort?.abort());
ui.newChat.addEventListener("click", async () => {
  history = [];
  ui.messages.replaceChildren();
  ui.stats.textContent = "";
  await engine?.resetChat();
  setState("ready");
});

setState("idle");
listModels().then(() => { if (params.get("autoload") === "1") loadModel(); }, showError);
