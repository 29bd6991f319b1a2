// transformers.js feature-extraction benchmark page logic (see transformersjs_embed.html and
// bench/embeddings_bench.py). Local-only like transformersjs.js: the model from `models`
// (env.localModelPath), ONNX Runtime Web's wasm files from /ort/. Mean pooling and L2 normalisation
// (the pipeline's options), as sentence-transformers pools all-MiniLM-L6-v2.
import { env, pipeline } from '/transformers/transformers.js';

const DEVICES = ['wasm', 'webgpu'];
const DTYPES = ['fp32', 'q8'];

function readParams() {
  const q = new URLSearchParams(location.search);
  const p = {
    device: q.get('device') ?? 'wasm',
    dtype: q.get('dtype') ?? 'fp32',
    threads: Number(q.get('threads') ?? '1'),
    model: q.get('model') ?? 'all-MiniLM-L6-v2',
    models: q.get('models') ?? '/models/',
    ort: q.get('ort') ?? '/ort/',
  };
  if (!DEVICES.includes(p.device)) throw new Error(`device must be one of ${DEVICES}, not ${p.device}`);
  if (!DTYPES.includes(p.dtype)) throw new Error(`dtype must be one of ${DTYPES}, not ${p.dtype}`);
  if (!Number.isInteger(p.threads) || p.threads < 1) throw new Error('threads must be a positive integer');
  return p;
}

const params = readParams();
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = params.models;
env.useBrowserCache = false;
env.useWasmCache = false;
env.backends.onnx.wasm.wasmPaths = { mjs: `${params.ort}ort-wasm-simd-threaded.asyncify.mjs`,
                                     wasm: `${params.ort}ort-wasm-simd-threaded.asyncify.wasm` };
env.backends.onnx.wasm.numThreads = params.threads;
env.backends.onnx.wasm.proxy = false;
let extractor = null;

function setStatus(text) { document.getElementById('status').textContent = text; }

window.benchLoad = async () => {
  const t0 = performance.now();
  extractor = await pipeline('feature-extraction', params.model, { device: params.device, dtype: params.dtype });
  const load_ms = performance.now() - t0;
  setStatus(`loaded in ${load_ms.toFixed(0)} ms`);
  return { load_ms, ...params, cross_origin_isolated: self.crossOriginIsolated,
           num_threads: env.backends.onnx.wasm.numThreads, hardware_concurrency: navigator.hardwareConcurrency };
};

// `warmup` untimed calls, then `reps` timed calls on the same texts; the last call's embeddings.
window.benchEmbed = async ({ texts, reps, warmup = 1 }) => {
  if (!extractor) throw new Error('call benchLoad() first');
  const embed = (input) => extractor(input, { pooling: 'mean', normalize: true });
  for (let i = 0; i < warmup; i++) await embed(texts);
  const ms = [];
  let out = null;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    out = await embed(texts);
    ms.push(performance.now() - t0);
  }
  return { ms, embeddings: out.tolist() };
};

setStatus('ready');
window.benchReady = true;
