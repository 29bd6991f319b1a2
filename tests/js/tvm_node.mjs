#!/usr/bin/env node
// Node harness for webbuild's linked TVM wasm modules: WebGPU through Dawn (npm `webgpu`,
// SwiftShader's Vulkan ICD on machines without a GPU) + the tvmjs runtime
// (npm `@mlc-ai/web-runtime`, the JS half of the TVM web runtime).
//
//   node tests/js/tvm_node.mjs gpu
//       print the WebGPU adapter tvmjs detects
//   node tests/js/tvm_node.mjs toy --wasm M.wasm --func main --inputs args.json [--out r.json]
//       call one VM function; args.json = {"args": [ARG...]} where ARG is
//         {"shape":[..], "dtype":"float32", "data":[flat values]}   (or "b64": raw LE bytes)
//         optional "device": "cpu" (default "gpu"); {"shape_tuple":[..]}; {"scalar":v,"dtype":"int64"}
//       --params FOLDER: also pass FOLDER's weights (tensor-cache.json) as one packed last argument
//       (a model function exported with param_mode "packed", e.g. an embedding model's encode)
//   node tests/js/tvm_node.mjs model --dir FOLDER --tokens 1,2,3 [--decode N] [--out r.json]
//       FOLDER holds model.wasm + tensor-cache.json (+ shards); runs embed + chunked prefill
//       through the paged KV cache, then N greedy decode steps (the result's decode_dispatches:
//       the WebGPU compute dispatches of each decode step's forward call).
//       options: --page-size 16 (the TIR KV-cache kernels require 16) --prefill-chunk N
//                --max-seq-len N --packed-params (params as one tuple arg) --wasm NAME.wasm
//                --all-logits (also return each decode step's logits) --no-prefetch-shaders
//                --device cpu (run on the wasm CPU device: for modules built for an llvm wasm32 target)
//
// The result is one JSON object, written to --out (if given) and printed as the last stdout
// line. Everything else (tvmjs / wasm logs) goes to stderr. Errors: {"error": "..."}, exit 1.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { inspect } from "node:util";

const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";
const CHROMIUM_LIBDIR = "/usr/lib/chromium";

// Dawn needs a Vulkan loader and ICD. Without a GPU and without VK_ICD_FILENAMES, use SwiftShader
// from the chromium package (its directory also has libvulkan.so.1); VK_ICD_FILENAMES picks another
// driver, e.g. Mesa's lavapipe (>= 23: bookworm's 22.3 is rejected by Dawn), which has shader-f16.
// LD_LIBRARY_PATH is read at process start, so re-run ourselves with the environment set.
function ensureVulkanEnv() {
  if (process.env.WEBBUILD_TVM_NODE_CHILD) return;
  const env = { ...process.env, WEBBUILD_TVM_NODE_CHILD: "1" };
  let changed = false;
  if (!env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) {
    env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    changed = true;
  }
  const hasSystemLoader = ["/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
    "/usr/lib64/libvulkan.so.1", "/usr/lib/libvulkan.so.1"].some(existsSync);
  const ldPath = (env.LD_LIBRARY_PATH || "").split(":").filter(Boolean);
  if (!hasSystemLoader && existsSync(path.join(CHROMIUM_LIBDIR, "libvulkan.so.1")) && !ldPath.includes(CHROMIUM_LIBDIR)) {
    env.LD_LIBRARY_PATH = [...ldPath, CHROMIUM_LIBDIR].join(":");
    changed = true;
  }
  if (!changed) return;
  const r = spawnSync(process.execPath, process.argv.slice(1), { env, stdio: "inherit" });
  process.exit(r.status === null ? 1 : r.status);
}
ensureVulkanEnv();

// Keep stdout for the result: route library logging to stderr.
const print = (s) => process.stdout.write(s + "\n");
const debug = process.env.WEBBUILD_TVM_NODE_DEBUG ? (...a) => process.stderr.write("[tvm_node] " + a.join(" ") + "\n") : () => {};
console.log = (...a) => console.error(...a);
console.info = (...a) => console.error(...a);

const require = createRequire(import.meta.url);
const tvmjs = require("@mlc-ai/web-runtime");
const { create: createGPU, globals: gpuGlobals } = await import("webgpu");
Object.assign(globalThis, gpuGlobals);
if (typeof globalThis.navigator === "undefined") {
  Object.defineProperty(globalThis, "navigator", { value: {}, configurable: true, writable: true });
}
if (!globalThis.navigator.gpu) {
  Object.defineProperty(globalThis.navigator, "gpu", { value: createGPU([]), configurable: true });
}
// compute dispatches issued so far (model mode reports those of each decode step's forward call)
let dispatchCount = 0;
if (globalThis.GPUComputePassEncoder) {
  const dispatch = GPUComputePassEncoder.prototype.dispatchWorkgroups;
  GPUComputePassEncoder.prototype.dispatchWorkgroups = function (...args) {
    dispatchCount += 1;
    return dispatch.apply(this, args);
  };
}

// ---------------------------------------------------------------------------- arguments

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const key = a.slice(2);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) out[key] = true;
      else { out[key] = next; ++i; }
    } else {
      out._.push(a);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------- dtype helpers

function halfToFloat(h) {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function bytesToValues(bytes, dtype) {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  switch (dtype) {
    case "float32": return Array.from(new Float32Array(buf));
    case "float64": return Array.from(new Float64Array(buf));
    case "int32": return Array.from(new Int32Array(buf));
    case "uint32": return Array.from(new Uint32Array(buf));
    case "int8": return Array.from(new Int8Array(buf));
    case "uint8": return Array.from(new Uint8Array(buf));
    case "bool": return Array.from(new Uint8Array(buf));
    case "int64": return Array.from(new BigInt64Array(buf), Number);
    case "float16": return Array.from(new Uint16Array(buf), halfToFloat);
    default: return null;
  }
}

function valuesToBytes(values, dtype) {
  const ctor = {
    float32: Float32Array, float64: Float64Array, int32: Int32Array, uint32: Uint32Array,
    int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
  }[dtype];
  if (ctor) return new Uint8Array(ctor.from(values).buffer);
  if (dtype === "int64") return new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);
  throw new Error(`give "b64" raw bytes for dtype ${dtype}`);
}

function sanitize(values) {
  // JSON has no NaN/Infinity
  return values.map((v) => (Number.isFinite(v) ? v : (Number.isNaN(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity"))));
}

// ---------------------------------------------------------------------------- runtime setup

// What the wasm wrote to stdout/stderr. tvmjs's WASI polyfill prints whole lines only, and a
// C++ error is logged without a trailing newline right before abort() -> exit(1); keep the
// bytes so the error can be reported.
const wasmOutput = { text: "" };

function capturingWASI() {
  const wasi = tvmjs.createPolyfillWASI();
  const provider = wasi.wasmLibraryProvider || wasi;  // tvmjs's EmccWASI: {imports, start}
  const imports = provider && provider.imports && provider.imports.wasi_snapshot_preview1;
  if (!imports || typeof imports.fd_write !== "function") return wasi;
  let memory;
  const fdWrite = imports.fd_write;
  imports.fd_write = (fd, iov, iovcnt, pnum) => {
    if (memory && (fd === 1 || fd === 2)) {
      const view = new DataView(memory.buffer);
      for (let i = 0; i < iovcnt; ++i) {
        const ptr = view.getUint32(iov + 8 * i, true);
        const len = view.getUint32(iov + 8 * i + 4, true);
        wasmOutput.text += Buffer.from(memory.buffer, ptr, len).toString("utf8");
      }
      if (wasmOutput.text.length > 65536) wasmOutput.text = wasmOutput.text.slice(-32768);
    }
    return fdWrite(fd, iov, iovcnt, pnum);
  };
  const procExit = imports.proc_exit;
  let exports;
  imports.proc_exit = (code) => {
    // C++ exceptions are compiled out: a throw aborts. An error raised by generated code is
    // still pending in the FFI's error slot then; fetch its message before exiting.
    let pending = "";
    try {
      const ptr = exports.TVMFFIWasmGetLastError();
      const bytes = new Uint8Array(memory.buffer, ptr);
      pending = Buffer.from(bytes.subarray(0, bytes.indexOf(0))).toString("utf8");
    } catch (e) { /* no pending error */ }
    wasmOutput.exit = { code, pending, stack: new Error(`wasm called exit(${code})`).stack };
    return procExit(code);
  };
  const start = provider.start;
  provider.start = (inst) => { memory = inst.exports.memory; exports = inst.exports; return start(inst); };
  return wasi;
}

async function setupRuntime(wasmPath, { prefetchShaders = true, cpu = false } = {}) {
  const t0 = performance.now();
  const gpu = await tvmjs.detectGPUDevice();
  if (gpu === undefined) throw new Error("WebGPU is not available (navigator.gpu missing)");
  const wasm = readFileSync(wasmPath);
  const logs = [];
  const tvm = await tvmjs.instantiate(
    wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength),
    capturingWASI(),
    (msg) => { logs.push(String(msg)); console.error(msg); });
  tvm.initWebGPU(gpu.device);
  tvm.beginScope();
  const device = cpu ? tvm.cpu() : tvm.webgpu();
  const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(device));
  if (prefetchShaders && !cpu) await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
  return { tvm, vm, device, gpu, logs, loadSeconds: (performance.now() - t0) / 1000 };
}

function adapterSummary(gpu) {
  const info = gpu.adapterInfo || {};
  const a = gpu.adapter;
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device,
    description: info.description, isFallbackAdapter: a.isFallbackAdapter ?? info.isFallbackAdapter,
    features: [...a.features].sort(),
    limits: {
      maxBufferSize: a.limits.maxBufferSize,
      maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: a.limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: a.limits.maxStorageBuffersPerShaderStage,
    },
  };
}

async function readTensor(tvm, device, t) {
  let cpu = t;
  if (t.device.deviceType !== tvm.cpu().deviceType) {
    cpu = tvm.empty(t.shape, t.dtype, tvm.cpu());
    cpu.copyFrom(t);
    await device.sync();
  }
  const bytes = cpu.toRawBytes();
  const values = bytesToValues(bytes, t.dtype);
  const out = { shape: [...t.shape], dtype: t.dtype };
  if (values) out.data = sanitize(values);
  else out.b64 = Buffer.from(bytes).toString("base64");
  return out;
}

function makeArg(tvm, device, spec) {
  if (spec.shape_tuple) return tvm.makeShapeTuple(spec.shape_tuple);
  if (spec.scalar !== undefined) return new tvmjs.Scalar(spec.scalar, spec.dtype || "int64");
  const dev = spec.device === "cpu" ? tvm.cpu() : device;
  const t = tvm.empty(spec.shape, spec.dtype, dev);
  const bytes = spec.b64 !== undefined ? new Uint8Array(Buffer.from(spec.b64, "base64"))
    : valuesToBytes(spec.data, spec.dtype);
  t.copyFromRawBytes(bytes);
  return t;
}

async function collectOutputs(tvm, device, ret) {
  if (ret instanceof tvmjs.Tensor) return [await readTensor(tvm, device, ret)];
  if (ret instanceof tvmjs.TVMArray) {
    const outs = [];
    for (let i = 0; i < ret.size(); ++i) outs.push(...(await collectOutputs(tvm, device, ret.get(i))));
    return outs;
  }
  if (typeof ret === "number" || typeof ret === "bigint" || typeof ret === "boolean") return [{ value: Number(ret) }];
  if (ret === undefined || ret === null) return [];
  return [{ object: ret.typeKey ? ret.typeKey() : String(ret) }];
}

// ---------------------------------------------------------------------------- modes

async function runGPU() {
  const gpu = await tvmjs.detectGPUDevice();
  if (gpu === undefined) throw new Error("WebGPU is not available");
  const r = { adapter: adapterSummary(gpu) };
  gpu.device.destroy();
  return r;
}

async function runToy(opts) {
  if (!opts.wasm || !opts.func) throw new Error("toy mode needs --wasm and --func");
  const rt = await setupRuntime(opts.wasm, { prefetchShaders: !opts["no-prefetch-shaders"], cpu: opts.device === "cpu" });
  const { tvm, vm, device } = rt;
  const spec = opts.inputs ? JSON.parse(readFileSync(opts.inputs, "utf8")) : { args: [] };
  const args = (spec.args || []).map((a) => makeArg(tvm, device, a));
  if (opts.params) args.push(tvm.detachFromCurrentScope(tvm.makeTVMArray(loadParams(tvm, device, path.resolve(opts.params)).params)));
  await device.sync();
  const f = vm.getFunction(opts.func);
  const t0 = performance.now();
  const ret = f(...args);
  await device.sync();
  const runSeconds = (performance.now() - t0) / 1000;
  // --repeat N: N more calls after the first (which compiles shaders), timed together
  const repeat = Number(opts.repeat || 0);
  const t1 = performance.now();
  for (let i = 0; i < repeat; ++i) f(...args);
  await device.sync();
  const repeatSeconds = repeat ? (performance.now() - t1) / 1000 / repeat : null;
  const outputs = await collectOutputs(tvm, device, ret);
  return { outputs, adapter: adapterSummary(rt.gpu), timings: { load: rt.loadSeconds, run: runSeconds, per_call: repeatSeconds } };
}

// Parameters from a webbuild model folder: tensor-cache.json ("webbuild-tensor-cache/1") lists
// shards (file, nbytes, sha256) of one byte stream and tensor records (byte_offset, nbytes in that
// stream). Shards are verified before use; each tensor is uploaded to the device as it completes.
function loadParams(tvm, device, dir) {
  const cache = JSON.parse(readFileSync(path.join(dir, "tensor-cache.json"), "utf8"));
  if (cache.format !== "webbuild-tensor-cache/1") throw new Error(`unknown tensor-cache format ${cache.format}`);
  const stream = new Uint8Array(cache.total_bytes);
  let offset = 0;
  for (const shard of cache.shards) {
    const data = readFileSync(path.join(dir, shard.file));
    const digest = createHash("sha256").update(data).digest("hex");
    if (digest !== shard.sha256) throw new Error(`shard ${shard.file} fails sha256 verification`);
    stream.set(data, offset);
    offset += data.length;
  }
  const params = cache.records.map((r) => {
    const bytes = stream.slice(r.byte_offset, r.byte_offset + r.nbytes);
    const t = tvm.detachFromCurrentScope(tvm.empty(r.shape, r.dtype, device));
    t.copyFromRawBytes(bytes);
    return t;
  });
  return { names: cache.records.map((r) => r.name), params };
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; ++i) if (values[i] > values[best]) best = i;
  return best;
}

async function runModel(opts) {
  if (!opts.dir) throw new Error("model mode needs --dir");
  const dir = path.resolve(opts.dir);
  const tokens = String(opts.tokens || "").split(",").filter((s) => s.trim() !== "").map(Number);
  if (tokens.length === 0 || tokens.some((t) => !Number.isInteger(t) || t < 0)) {
    throw new Error("--tokens must be a comma-separated list of token ids");
  }
  const nDecode = Number(opts.decode || 0);
  const pageSize = Number(opts["page-size"] || 16);
  const prefillChunk = Number(opts["prefill-chunk"] || Math.max(tokens.length, 16));
  const maxSeqLen = Number(opts["max-seq-len"] || Math.max(1024, tokens.length + nDecode + 1));
  const wasmPath = path.join(dir, opts.wasm || "model.wasm");

  const rt = await setupRuntime(wasmPath, { prefetchShaders: !opts["no-prefetch-shaders"], cpu: opts.device === "cpu" });
  const { tvm, vm, device } = rt;
  const timings = { load: rt.loadSeconds };

  debug("runtime ready");
  let t0 = performance.now();
  const { params } = loadParams(tvm, device, dir);
  const paramArgs = opts["packed-params"] ? [tvm.detachFromCurrentScope(tvm.makeTVMArray(params))] : params;
  timings.params = (performance.now() - t0) / 1000;

  debug("params loaded");
  const fEmbed = vm.getFunction("embed");
  const fPrefill = vm.getFunction("prefill");
  // toy modules (tests/test_wasm_runtime.py, test_webgpu_attention.py) may lack decode and _metadata
  const hasFunction = (name) => { try { return typeof vm.getFunction(name) === "function"; } catch { return false; } };
  const fDecodeAny = hasFunction("decode") ? vm.getFunction("decode") : undefined;
  const fDecode = nDecode > 0 ? fDecodeAny : undefined;
  const fAddSeq = tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence");
  const fBegin = tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward");
  const fEnd = tvm.getGlobalFunc("vm.builtin.kv_state_end_forward");
  const metadata = hasFunction("_metadata") ? JSON.parse(String(vm.getFunction("_metadata")())) : {};

  const kv = tvm.detachFromCurrentScope(metadata.kv_state === "rnn_state"
    ? vm.getFunction("create_rnn_state")(
      tvm.makeShapeTuple([1]),              // max_batch_size
      tvm.makeShapeTuple([2]))              // max_history: each forward reads one slot, writes the other
    : vm.getFunction("create_paged_kv_cache")(
      tvm.makeShapeTuple([1]),              // max_batch_size
      tvm.makeShapeTuple([maxSeqLen]),      // max_total_seq_len
      tvm.makeShapeTuple([prefillChunk]),   // prefill_chunk_size
      tvm.makeShapeTuple([pageSize]),       // page_size
      tvm.makeShapeTuple([0]),              // support_sliding_window
    ));
  debug("kv state created", metadata.kv_state);
  fAddSeq(kv, new tvmjs.Scalar(0, "int64"));

  let lastForwardDispatches = 0;
  // one forward step over `ids` (appended to sequence 0); returns logits on the GPU
  const step = (fn, ids) => {
    tvm.beginScope();
    const input = tvm.empty([ids.length], "int32", device);
    input.copyFrom(Int32Array.from(ids));
    debug("embed", ids.length);
    const emb = fEmbed(input, ...paramArgs);
    const hidden = emb.shape[emb.shape.length - 1];
    const emb3 = emb.view([1, ids.length, hidden]);
    fBegin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
    debug("forward");
    const before = dispatchCount;
    const ret = fn(emb3, kv, ...paramArgs);
    lastForwardDispatches = dispatchCount - before;
    fEnd(kv);
    const logits = tvm.detachFromCurrentScope(ret instanceof tvmjs.TVMArray ? ret.get(0) : ret);
    tvm.endScope();
    return logits;
  };
  const readLogits = async (logits) => {
    const r = await readTensor(tvm, device, logits);
    logits.dispose();
    return r;
  };

  t0 = performance.now();
  let logits;
  // a sliding-window model takes at most window - 1 tokens per call (webbuild/arch/kv_model.py); on the
  // CPU device one per call once `window` tokens are cached (as webbuild/runner.py does)
  const window = metadata.sliding_window;
  const prefillStep = window ? Math.min(prefillChunk, window - 1) : prefillChunk;
  for (let start = 0; start < tokens.length;) {
    const size = window && opts.device === "cpu" && start >= window ? 1 : prefillStep;
    if (logits) logits.dispose();
    logits = step(size > 1 ? fPrefill : fDecodeAny, tokens.slice(start, start + size));
    start += size;
  }
  const prefill = await readLogits(logits);
  timings.prefill = (performance.now() - t0) / 1000;

  const generated = [];
  const stepLogits = [];
  const stepDispatches = [];
  let last = prefill.data;
  t0 = performance.now();
  for (let i = 0; i < nDecode; ++i) {
    const next = argmax(last);
    generated.push(next);
    if (i === nDecode - 1) break;  // the last token needs no forward pass
    const r = await readLogits(step(fDecode, [next]));
    stepDispatches.push(lastForwardDispatches);
    if (opts["all-logits"]) stepLogits.push(r.data);
    last = r.data;
  }
  timings.decode = (performance.now() - t0) / 1000;
  timings.decode_tokens_per_s = nDecode > 1 ? (nDecode - 1) / timings.decode : null;
  timings.prefill_tokens_per_s = tokens.length / timings.prefill;

  const result = {
    prompt_tokens: tokens.length, logits_shape: prefill.shape, logits_dtype: prefill.dtype,
    logits: prefill.data, tokens: generated, timings, adapter: adapterSummary(rt.gpu),
    decode_dispatches: stepDispatches,
    kv_cache: { page_size: pageSize, prefill_chunk_size: prefillChunk, max_total_seq_len: maxSeqLen,
      prefill_step: prefillStep, sliding_window: metadata.sliding_window ?? null },
  };
  if (opts["all-logits"]) result.decode_logits = stepLogits;
  return result;
}

// ---------------------------------------------------------------------------- main

const opts = parseArgs(process.argv.slice(2));
const mode = opts._[0];
let result;
let code = 0;
try {
  if (mode === "gpu") result = await runGPU();
  else if (mode === "toy") result = await runToy(opts);
  else if (mode === "model") result = await runModel(opts);
  else throw new Error(`unknown mode ${JSON.stringify(mode)}; use gpu | toy | model`);
} catch (err) {
  let msg = err instanceof Error ? String(err.stack || err) : inspect(err, { depth: 4 });
  if (wasmOutput.exit) {
    msg = `the wasm module aborted (exit ${wasmOutput.exit.code})`;
    if (wasmOutput.exit.pending) msg += ": " + wasmOutput.exit.pending;
    msg += "\n" + wasmOutput.exit.stack.split("\n").slice(1, 12).map((l) => l.slice(0, 240)).join("\n");
  }
  if (wasmOutput.text.trim()) msg += "\nwasm output:\n" + wasmOutput.text.trim().split("\n").slice(-40).join("\n");
  result = { error: msg };
  code = 1;
}
const text = JSON.stringify(result);
if (opts.out) writeFileSync(opts.out, text);
print(text);
process.exit(code);
