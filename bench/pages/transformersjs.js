// transformers.js benchmark page logic (see transformersjs.html and bench/peers/transformersjs.py).
// Local-only: models from `models` (env.localModelPath), ONNX Runtime Web's wasm files from /ort/
// (the default is a CDN). Greedy decoding of exactly max_new_tokens (EOS banned via min_new_tokens);
// timings from a streamer: its first put() is the prompt, each later put() one new token.
import { AutoModelForCausalLM, AutoTokenizer, env } from '/transformers/transformers.js';

const DEVICES = ['wasm', 'webgpu'];
const DTYPES = ['fp32', 'q4'];

function readParams() {
  const q = new URLSearchParams(location.search);
  const p = {
    device: q.get('device') ?? 'wasm',
    dtype: q.get('dtype') ?? 'fp32',
    threads: Number(q.get('threads') ?? '1'),
    model: q.get('model') ?? 'SmolLM2-135M-Instruct',
    models: q.get('models') ?? '/models/',
    ort: q.get('ort') ?? '/ort/',
    browser_cache: (q.get('browser_cache') ?? '1') !== '0',
  };
  if (!DEVICES.includes(p.device)) throw new Error(`device must be one of ${DEVICES}, not ${p.device}`);
  if (!DTYPES.includes(p.dtype)) throw new Error(`dtype must be one of ${DTYPES}, not ${p.dtype}`);
  if (!Number.isInteger(p.threads) || p.threads < 1) throw new Error(`threads must be a positive integer`);
  return p;
}

function configure(p) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = p.models;
  env.useBrowserCache = p.browser_cache;  // the library's default (Cache API): a second load is warm
  env.useWasmCache = false;
  const wasm = env.backends.onnx.wasm;
  wasm.wasmPaths = { mjs: `${p.ort}ort-wasm-simd-threaded.asyncify.mjs`,
                     wasm: `${p.ort}ort-wasm-simd-threaded.asyncify.wasm` };
  wasm.numThreads = p.threads;
  wasm.proxy = false;
}

const params = readParams();
configure(params);
let tokenizer = null;
let model = null;

function setStatus(text) { document.getElementById('status').textContent = text; }

// The files transformers.js holds in its Cache API cache (a put can fail: e.g. quota of an
// off-the-record context, where the 650 MB fp32 model does not fit; then a reload is not warm).
async function cachedFiles() {
  if (!params.browser_cache || !self.caches) return [];
  const cache = await caches.open('transformers-cache');
  return (await cache.keys()).map((r) => new URL(r.url).pathname);
}

window.benchLoad = async () => {
  if (model) { await model.dispose(); model = null; }
  const t0 = performance.now();
  tokenizer = await AutoTokenizer.from_pretrained(params.model);
  model = await AutoModelForCausalLM.from_pretrained(params.model, { device: params.device, dtype: params.dtype });
  const load_ms = performance.now() - t0;
  setStatus(`loaded in ${load_ms.toFixed(0)} ms`);
  return { load_ms, ...params, cross_origin_isolated: self.crossOriginIsolated,
           num_threads: env.backends.onnx.wasm.numThreads,
           hardware_concurrency: navigator.hardwareConcurrency, cached_files: await cachedFiles() };
};

class TimingStreamer {
  constructor() { this.times = []; this.ids = []; this.prompt = true; }
  put(value) {
    if (this.prompt) { this.prompt = false; return; }
    this.times.push(performance.now());
    this.ids.push(Number(value[0][0]));
  }
  end() {}
}

function rates(t0, times, prefill_tokens) {
  const n = times.length;
  const ttft_ms = times[0] - t0;
  const decode_ms = times[n - 1] - times[0];
  return { ttft_ms, prefill_tokens, prefill_tok_s: prefill_tokens / (ttft_ms / 1000),
           decode_tokens: n - 1, decode_ms, decode_tok_s: n > 1 ? (n - 1) / (decode_ms / 1000) : null };
}

window.benchGenerate = async ({ prompt_messages, max_new_tokens }) => {
  if (!model) throw new Error('call benchLoad() first');
  const inputs = tokenizer.apply_chat_template(prompt_messages, { add_generation_prompt: true, return_dict: true });
  const prompt_ids = Array.from(inputs.input_ids.data, Number);
  const streamer = new TimingStreamer();
  const t0 = performance.now();
  await model.generate({ ...inputs, max_new_tokens, min_new_tokens: max_new_tokens, do_sample: false,
                         repetition_penalty: 1.0, streamer });
  const end = performance.now();
  const text = tokenizer.decode(streamer.ids, { skip_special_tokens: true });
  setStatus(text);
  return { ...rates(t0, streamer.times, prompt_ids.length), wall_ms: end - t0, text,
           token_ids: streamer.ids, prompt_ids };
};

setStatus('ready');
window.benchReady = true;
