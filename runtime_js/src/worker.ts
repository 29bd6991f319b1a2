// The engine worker (dist/worker.js): runs a LocalEngine off the main thread and answers the
// page-side proxy's messages (worker_protocol.ts).
import { LocalEngine } from "./engine.js";
import { serializeError } from "./errors.js";
import type { Completion, CompletionChunk } from "./completions.js";
import type { ChatCompletion, ChatCompletionChunk } from "./protocol.js";
import type { FromWorker, ToWorker } from "./worker_protocol.js";

const scope = globalThis as unknown as { postMessage(m: FromWorker): void; onmessage: ((e: MessageEvent<ToWorker>) => void) | null };
let engine: LocalEngine | null = null;
const aborts = new Map<number, AbortController>();

function send(message: FromWorker): void {
  scope.postMessage(message);
}

async function create(id: number, request: ToWorker & { type: "create" }): Promise<void> {
  if (!engine) throw new Error("no model is loaded");
  const abort = new AbortController();
  aborts.set(id, abort);
  try {
    if (request.api === "embeddings") {
      send({ type: "result", id, result: await engine.embeddings.create({ ...request.request, signal: abort.signal }) });
      return;
    }
    const result = request.api === "chat"
      ? await engine.chat.completions.create({ ...request.request, signal: abort.signal })
      : await engine.completions.create({ ...request.request, signal: abort.signal });
    if (request.request.stream) {
      for await (const chunk of result as AsyncIterable<ChatCompletionChunk | CompletionChunk>) send({ type: "chunk", id, chunk });
      send({ type: "result", id, result: null });
    } else {
      send({ type: "result", id, result: result as ChatCompletion | Completion });
    }
  } finally {
    aborts.delete(id);
  }
}

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case "load":
      engine = await LocalEngine.load(message.modelUrl, {
        ...message.options, onProgress: (event) => send({ type: "progress", event }),
      });
      send({ type: "loaded", config: engine.config, backend: engine.backend, threads: engine.threads,
            fallbackReason: engine.fallbackReason });
      return;
    case "create":
      return create(message.id, message);
    case "abort":
      aborts.get(message.id)?.abort();
      return;
    case "interrupt":
      engine?.interrupt();
      return;
    case "reset":
      await engine?.resetChat();
      send({ type: "result", id: message.id, result: null });
      return;
    case "unload":
      await engine?.unload();
      engine = null;
      send({ type: "result", id: message.id, result: null });
      return;
  }
}

scope.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  handle(message).catch((err) => {
    const id = "id" in message ? message.id : null;
    send({ type: "error", id, error: serializeError(err) });
  });
};
