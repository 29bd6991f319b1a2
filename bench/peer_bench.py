"""Peer benchmark: webbuild's WebGPU and WASM CPU modules against @wllama/wllama and
@huggingface/transformers, in headless chromium (TOOLCHAIN.md's flags), on SmolLM2-135M-Instruct.

Usage: python bench/peer_bench.py [--models out/bench/models] [--tokens 128] [--webgpu-tokens N]
                                  [--runs 3] [--configs 'webbuild-*,wllama-2t'] [--json out/bench/peers.json]
                                  [--png out/bench/peers.png] [--list]

Configurations (--configs takes a comma-separated list of names or shell patterns; each q0f32 one
also exists for `source`, the default build: the GGUF's own blocks):
  webbuild-webgpu-q4f32_1, webbuild-webgpu-q0f32  model.wasm on the browser's WebGPU adapter
  webbuild-wasm-q4f32_1-1t, webbuild-wasm-q0f32-1t
                                                  model-cpu.wasm (backend "wasm", threads 1)
  webbuild-wasm-q4f32_1-2t, webbuild-wasm-q0f32-2t
                                                  model-cpu-threads.wasm (threads 2: needs the build's
                                                  threaded module and a cross-origin isolated page)
  webbuild-wasm-q4f32_1-1t-worker, webbuild-wasm-q4f32_1-2t-worker
                                                  the same in the runtime's Web Worker (`worker: true`;
                                                  unload ends the worker, which frees its memory at once)
  wllama-1t, wllama-2t                            llama.cpp in WASM on the GGUF the builds come from
  tjs-wasm-fp32-1t, tjs-wasm-fp32-2t, tjs-wasm-q4-2t, tjs-webgpu-fp32
                                                  transformers.js (ONNX Runtime Web) on an ONNX export
                                                  (bench/peers/transformersjs.py, onnx_export.py)
A configuration whose engine, files or run fails is skipped; the reason is recorded under "skipped".
Missing webbuild folders (and those without a module the configurations run) are built into --models;
--rebuild builds them again (do that after the runtime or compiler changed).

Every configuration gets its own browser: a cold load (nothing cached), a warm load (the browser's
caches), then a warm-up round and --runs measured rounds, each running every configuration once
(interleaved); medians of the measured runs are reported. Same prompt text (webbuild's chat template
rendered for the question; wllama gets it as a raw completion, so a GGUF without a template is not
given llama.cpp's ChatML fallback), greedy, the prompt re-prefilled each run, the stop token banned
so every run generates exactly its token count (webbuild: logit_bias -100; wllama: ignore_eos).

Recorded per configuration: load (cold, warm), time to first token, prefill and decode tok/s (each
engine's own accounting, plus client-side stream timings where the engine streams), peak browser
memory (sum of PSS over the browser's process tree, sampled every --mem-interval s while it works),
the text and whether it matches the same-quantization reference (webbuild: the Python CPU build of the
same quantization with the same logit bias; transformers.js fp32: HF transformers' PyTorch greedy ids
on the same dequantized weights; wllama's Q4_1 and ONNX q4: none), the load average around every run.
For WebGPU configurations the WebGPU calls are counted in the page (compute dispatches, submits,
readbacks) and a 1-token probe run turns them into per-decoded-token counts. Weight bytes read per
decoded token come from the shards (tensor-cache.json; a tied head reads the whole embedding) or the
GGUF; with a bandwidth measured in a separate browser (a WebGPU read kernel and buffer copy, a JS
memcpy) they give a decode ceiling. Ratios: every webbuild configuration over every peer.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, write_result
from _peers import (
    CONTEXT_WINDOW,
    QUESTION,
    WEBBUILD_GEN_JS,
    WEBBUILD_LOAD_JS,
    WLLAMA_DIR,
    WLLAMA_GEN_JS,
    WLLAMA_LOAD_JS,
    WLLAMA_RAW_GEN_JS,
    Config,
    MemorySampler,
    evaluate_load,
    isolated_server,
    loadavg_summary,
    measure,
    ratios,
    streamed_run,
    timestamp,
    webbuild_metrics,
    wllama_metrics,
    wllama_server,
)

sys.path.insert(0, str(REPO / "bench"))

from browser_support import cpu_greedy_ids, decode_text, launch_chromium, render_chat, webbuild_server  # noqa: E402


def rendered_prompt(folder: Path, question: str) -> str:
    """The user turn `question` as webbuild's runtime renders it (the folder's chat template), without a
    leading BOS text where the tokenizer adds BOS itself (llama.cpp's completion adds it too)."""
    from tokenizers import Tokenizer

    config = json.loads((folder / "chat-config.json").read_text())
    prompt = render_chat(config["chat_template"], [{"role": "user", "content": question}])
    bos = config.get("bos_token_id")
    bos_text = Tokenizer.from_file(str(folder / "tokenizer.json")).id_to_token(bos) if bos is not None else None
    if config.get("add_bos_token") and bos_text and prompt.startswith(bos_text):
        prompt = prompt[len(bos_text):]
    return prompt

MODEL = "smollm2-135m-instruct"
QUANTIZATIONS = ("q4f32_1", "q0f32", "source")
TJS_DIR = REPO / "node_modules" / "@huggingface" / "transformers"
#: transformers.js configurations: name -> (device, dtype, threads; None: not applicable)
TJS_CONFIGS = {"tjs-wasm-fp32-1t": ("wasm", "fp32", 1), "tjs-wasm-fp32-2t": ("wasm", "fp32", 2),
               "tjs-wasm-q4-2t": ("wasm", "q4", 2), "tjs-webgpu-fp32": ("webgpu", "fp32", None)}
WEBBUILD_CONFIGS = ([f"webbuild-webgpu-{q}" for q in QUANTIZATIONS]
                    + [f"webbuild-wasm-{q}-{n}t" for q in QUANTIZATIONS for n in (1, 2)]
                    + [f"webbuild-wasm-{QUANTIZATIONS[0]}-{n}t-worker" for n in (1, 2)])
WLLAMA_CONFIGS = ["wllama-1t", "wllama-2t"]
ALL_CONFIGS = WEBBUILD_CONFIGS + WLLAMA_CONFIGS + list(TJS_CONFIGS)

# A separate browser measures what bandwidth the adapter and JS get (so its buffers stay out of the
# configurations' memory): a WebGPU kernel summing a buffer (vec4 loads, no barriers), a WebGPU
# buffer-to-buffer copy, and a TypedArray.set memcpy in JS; medians of `reps` after one warm-up.
BANDWIDTH_JS = """async ([mb, reps]) => {
  const median = (ts) => { ts.shift(); ts.sort((a, b) => a - b); return ts[ts.length >> 1] / 1000; };
  const bytes = mb * 1048576;
  const a = new Uint8Array(bytes).fill(1), b = new Uint8Array(bytes);
  const js = [];
  for (let i = 0; i <= reps; i++) { const t0 = performance.now(); b.set(a); js.push(performance.now() - t0); }
  const out = {bytes, js_copy_bytes_per_s: bytes / median(js)};
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return {...out, adapter: null};
  const info = adapter.info ?? {};
  out.adapter = {vendor: info.vendor, architecture: info.architecture, device: info.device,
                 description: info.description, is_fallback: adapter.isFallbackAdapter ?? info.isFallbackAdapter,
                 features: [...adapter.features].sort(),
                 max_storage_buffer_binding_size: adapter.limits.maxStorageBufferBindingSize};
  const device = await adapter.requestDevice();
  const n = bytes / 16, threads = 65536;
  const U = GPUBufferUsage;
  const src = device.createBuffer({size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST});
  const dst = device.createBuffer({size: bytes, usage: U.STORAGE | U.COPY_DST});
  const sums = device.createBuffer({size: threads * 16, usage: U.STORAGE});
  device.queue.writeBuffer(src, 0, a);
  const module = device.createShaderModule({code: `
    @group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
    @group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
      var acc = vec4<f32>(0.0);
      for (var i = g.x; i < ${n}u; i += ${threads}u) { acc += src[i]; }
      dst[g.x] = acc;
    }`});
  const pipeline = device.createComputePipeline({layout: 'auto', compute: {module, entryPoint: 'main'}});
  const bind = device.createBindGroup({layout: pipeline.getBindGroupLayout(0), entries: [
    {binding: 0, resource: {buffer: src}}, {binding: 1, resource: {buffer: sums}}]});
  const time = async (encode) => {
    const ts = [];
    for (let i = 0; i <= reps; i++) {
      const enc = device.createCommandEncoder();
      encode(enc);
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      ts.push(performance.now() - t0);
    }
    return median(ts);
  };
  out.gpu_read_bytes_per_s = bytes / await time((enc) => {
    const p = enc.beginComputePass(); p.setPipeline(pipeline); p.setBindGroup(0, bind);
    p.dispatchWorkgroups(threads / 64); p.end(); });
  out.gpu_copy_bytes_per_s = bytes / await time((enc) => enc.copyBufferToBuffer(src, 0, dst, 0, bytes));
  device.destroy();
  return out;
}"""


# ---------------------------------------------------------------------------------------------
# Model files

def webbuild_parts(name: str) -> tuple[str, str, int | None]:
    """'webbuild-wasm-q4f32_1-2t[-worker]' -> ("wasm", "q4f32_1", 2); WebGPU names have no thread count."""
    parts = name.split("-")
    return parts[1], parts[2], int(parts[3].rstrip("t")) if len(parts) > 3 else None


def in_worker(name: str) -> bool:
    """Whether a webbuild configuration runs in the runtime's Web Worker (`worker: true`)."""
    return name.endswith("-worker")


def _stale(folder: Path, target: str) -> str | None:
    """Why an existing build cannot be used as is (None: it can)."""
    try:
        config = json.loads((folder / "chat-config.json").read_text())
    except (OSError, ValueError):
        return "no chat-config.json"
    wanted = {"webgpu": ("webgpu", "wasm", "wasm-threads"), "cpu": ("cpu",)}[target]
    libs = config.get("model_libs", {})
    missing = [k for k in wanted if k not in libs or not (folder / libs[k]).is_file()]
    if missing:
        return "built without the " + ", ".join(missing) + " module"
    return None


def ensure_builds(models: Path, source: str, name: str, quantizations, targets=("webgpu",),
                  rebuild: bool = False) -> dict:
    """(quantization, target) -> the build's folder under `models`, building the missing ones and
    those made by an older webbuild without a module this bench runs (or every one with `rebuild`)."""
    from webbuild.build import BuildRequest, build, model_folder_name

    folders = {}
    for q in quantizations:
        for target in targets:
            folder = models / model_folder_name(name, q, target)
            why = "--rebuild" if rebuild else _stale(folder, target)
            if why:
                print(f"building {folder.name} ({why}) ...", file=sys.stderr, flush=True)
                build(BuildRequest(source, q, models, target=target, name=name))
            folders[q, target] = folder
    return folders


def shard_weights(folder: Path) -> dict:
    """Bytes of parameters read per decoded token by a build: every shard byte, except that an untied
    embedding table is only gathered (one row per token); a tied head reads all of it."""
    cache = json.loads((folder / "tensor-cache.json").read_text())
    records = cache["records"]
    total = sum(r["nbytes"] for r in records)
    embed = [r for r in records if r["name"].startswith("tok_embed.")]
    tied = not any(r["name"].startswith("lm_head.") for r in records)
    per_token = total if tied else total - sum(r["nbytes"] - r["nbytes"] // r["shape"][0] for r in embed)
    layers = {r["name"].split(".")[1] for r in records if r["name"].startswith("layers.")}
    return {"weights_bytes": total, "bytes_per_token": per_token, "embedding_bytes": sum(r["nbytes"] for r in embed),
            "tied_embedding": tied, "layers": len(layers)}


def gguf_weights(path: Path) -> dict:
    """The same for a GGUF: tensor bytes, less the embedding table but one row when the output is untied."""
    import gguf

    reader = gguf.GGUFReader(path)
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    rows = {t.name: int(t.shape[-1]) for t in reader.tensors}  # gguf shapes are (cols, rows)
    total = sum(sizes.values())
    embed = sizes.get("token_embd.weight", 0)
    tied = "output.weight" not in sizes
    per_token = total if tied or not embed else total - embed + embed // rows["token_embd.weight"]
    layers = {n.split(".")[1] for n in sizes if n.startswith("blk.")}
    return {"weights_bytes": total, "bytes_per_token": per_token, "embedding_bytes": embed, "tied_embedding": tied,
            "layers": len(layers)}


def onnx_weights(folder: Path, dtype: str) -> dict | None:
    """The ONNX file's bytes (with external data) for transformers.js: an upper bound of what a decode
    step reads (it includes the embedding; the export's head is tied to it). None when unknown."""
    stem = {"fp32": "model", "q4": "model_q4"}.get(dtype)
    files = [p for p in (folder / "onnx").glob(f"{stem}.onnx*") if p.is_file()] if stem else []
    if not files:
        return None
    total = sum(p.stat().st_size for p in files)
    return {"weights_bytes": total, "bytes_per_token": total, "files": sorted(p.name for p in files),
            "note": "upper bound: the ONNX file (graph + weights, the embedding table included)"}


def references(folders: dict, quantizations, tokens: int, question: str = QUESTION) -> dict:
    """quantization -> greedy ids of its CPU build (stop ids biased -100 like the browser runs)."""
    out = {}
    for q in quantizations:
        folder = folders[q, "cpu"]
        stops = json.loads((folder / "chat-config.json").read_text())["stop_token_ids"]
        started = time.monotonic()
        ids = cpu_greedy_ids(folder, [{"role": "user", "content": question}], tokens, {s: -100.0 for s in stops})
        out[q] = {"folder": folder, "ids": ids, "seconds": round(time.monotonic() - started, 1)}
        print(f"reference {q}: {len(ids)} tokens in {out[q]['seconds']} s", file=sys.stderr, flush=True)
    return out


def check_text(text: str, reference: str | None, kind: str) -> dict:
    if reference is None:
        return {"reference": "none", "mentions_paris": "Paris" in text}
    text, reference = text.strip(), reference.strip()
    prefix = 0
    while prefix < min(len(text), len(reference)) and text[prefix] == reference[prefix]:
        prefix += 1
    return {"reference": kind, "matches": text == reference, "common_prefix_chars": prefix,
            "reference_text": reference, "mentions_paris": "Paris" in text}


# ---------------------------------------------------------------------------------------------
# transformers.js (optional: bench/peers/transformersjs.py and onnx_export.py)

def tjs_setup():
    """(module, ONNX model folder) of the transformers.js peer; raises with the reason when unavailable."""
    from peers import transformersjs  # noqa: PLC0415 - optional
    from peers.onnx_export import ensure_onnx_export  # noqa: PLC0415

    transformersjs.check_install()
    return transformersjs, Path(ensure_onnx_export())


def tjs_load(module, url: str, model: str, device: str, dtype: str, threads: int | None) -> Callable:
    """load(page): the first call opens the bench page and loads (cold), later ones load again (warm)."""
    opened: list = []

    def load(page) -> dict:
        if not opened:
            info = module.open_page(page, device, dtype, threads or 1, url=url, model=model)
            opened.append(info)
        else:
            info = page.evaluate("() => window.benchLoad()")
        return {"load_s": info["load_ms"] / 1000,
                **{k: info.get(k) for k in ("num_threads", "cross_origin_isolated", "blocked_requests")
                   if k in info}}

    return load


def tjs_generate(module, messages: list[dict]) -> Callable:
    def generate(page, tokens: int) -> dict:
        r = module.generate(page, tokens, messages)
        ids = r.get("token_ids") or []
        return {"ttft_s": r["ttft_ms"] / 1000, "prefill_tok_s": r.get("prefill_tok_s"),
                "decode_tok_s": r.get("decode_tok_s"), "prompt_tokens": r.get("prefill_tokens"),
                "completion_tokens": len(ids), "client_ttft_s": None, "client_decode_tok_s": None,
                "wall_s": r.get("wall_ms", 0) / 1000, "text": r.get("text", ""), "token_ids": ids}

    return generate


def tjs_reference(tokens: int) -> tuple[list[int], str]:
    """HF transformers' PyTorch float32 greedy ids and text on the dequantized GGUF (the ONNX export's
    weights), EOS banned: the reference of the fp32 ONNX configurations."""
    from peers import transformersjs  # noqa: PLC0415

    return transformersjs.torch_reference(tokens)


# ---------------------------------------------------------------------------------------------
# Report

def derive(configs: dict, bandwidth: dict, weights: dict, refs: dict) -> None:
    """Weights per token, decode ceilings, dispatches per layer and text checks, into each summary."""
    for name, c in configs.items():
        w = weights.get(name)
        if w:
            c["weights"] = w
            gpu = c.get("backend") == "webgpu" or c.get("device") == "webgpu"
            bw = bandwidth.get("gpu_read_bytes_per_s") if gpu else bandwidth.get("js_copy_bytes_per_s")
            decode = c["median"].get("decode_tok_s")
            single = gpu or (c.get("threads") or 1) == 1  # one core's memcpy bounds one thread only
            c["decode_ceiling"] = {
                "tok_s": bw / w["bytes_per_token"] if bw and single else None, "bandwidth_bytes_per_s": bw,
                "bandwidth_source": ("WebGPU read kernel (same adapter)" if gpu
                                     else "JS TypedArray.set memcpy (one thread)"),
                "implied_bandwidth_bytes_per_s": decode * w["bytes_per_token"] if decode else None,
                "fraction_reached": decode * w["bytes_per_token"] / bw if bw and decode and single else None}
            per_token = c.get("gpu_per_token")
            if per_token and w.get("layers"):
                c["dispatches_per_layer"] = per_token["dispatch"] / w["layers"]
        used = c["load_info"].get("threads")
        if c.get("threads") and used is not None and used != c["threads"]:
            c["threads_used"] = used  # asked for c["threads"], the engine runs on `used`
        ref = refs.get(name)
        c["correctness"] = check_text(c["text"], ref[0] if ref else None, ref[1] if ref else "none")
        ref_ids = refs.get(name + "#ids")
        if ref_ids is not None and c["runs"] and c["runs"][0].get("token_ids") is not None:
            ids = c["runs"][0]["token_ids"]
            same = 0
            while same < min(len(ids), len(ref_ids)) and ids[same] == ref_ids[same]:
                same += 1
            c["correctness"].update(reference=ref[1], ids_match=ids == ref_ids, common_prefix_tokens=same,
                                    matches=ids == ref_ids)


def print_table(result: dict) -> None:
    configs = result["configs"]
    head = (f"{'configuration':<33}{'thr':>4}{'tok':>5}{'decode':>9}{'prefill':>9}{'TTFT':>8}{'cold':>7}"
            f"{'warm':>7}{'peakMB':>8}{'at':>6}{'genMB':>7}{'disp/tok':>9}{'ceiling':>9}  {'text':<6} load avg")
    print(head)
    print("-" * len(head))
    f = lambda v, spec: format(v, spec) if v is not None else format("-", spec.split(".")[0].rstrip("f"))  # noqa: E731
    for name, c in configs.items():
        m = c["median"]
        mem = c["memory"]["peak_pss_bytes"]
        phase = (c["memory"].get("peak_phase") or "-")[:5]
        gen = (c["memory"].get("peak_pss_by_phase") or {}).get("generate")
        per_tok = (c.get("gpu_per_token") or {}).get("dispatch")
        ceiling = (c.get("decode_ceiling") or {}).get("tok_s")
        check = c["correctness"]
        ok = "n/a" if check["reference"] == "none" else ("same" if check["matches"] else "DIFF")
        threads = f"{c['threads_used']}!" if "threads_used" in c else c.get("threads")
        print(f"{name:<33}{f(threads, '>4')}{c['tokens']:>5}{f(m.get('decode_tok_s'), '>9.2f')}"
              f"{f(m.get('prefill_tok_s'), '>9.1f')}{f(m.get('ttft_s'), '>8.3f')}{f(c['load_cold_s'], '>7.2f')}"
              f"{f(c['load_warm_s'], '>7.2f')}{f(mem / 2**20 if mem else None, '>8.0f')}{phase:>6}"
              f"{f(gen / 2**20 if gen else None, '>7.0f')}{f(per_tok, '>9.1f')}"
              f"{f(ceiling, '>9.3g')}  {ok:<6} {c['loadavg_before'][0]:.2f} -> {c['loadavg_after'][0]:.2f}")
    print("decode/prefill tok/s, TTFT and loads in s (medians); peakMB: browser PSS, at: in which phase (cold / "
          "warm load, generate); genMB: peak while generating; disp/tok: WebGPU dispatches per decoded token; "
          "ceiling: tok/s the measured bandwidth allows; text: vs same-quantization reference; "
          "thr N!: the engine ran on N threads, not the configuration's")
    for name, r in result["ratios"].items():
        print(f"  {name:<50} decode x{f(r['decode_tok_s'], '.3f')}  prefill x{f(r['prefill_tok_s'], '.3f')}")
    for name, c in configs.items():
        same = "" if c["texts_identical"] else "  (texts differ between runs!)"
        print(f"  {name} text{same}: {c['text'][:120]!r}")
    for name, s in result["skipped"].items():
        print(f"  skipped {name}: {s['error'].splitlines()[0][:160]}")
    bw = result["bandwidth"]
    gbs = lambda k: f"{bw[k] / 1e9:.2f} GB/s" if bw.get(k) else "-"  # noqa: E731
    print(f"bandwidth: WebGPU read {gbs('gpu_read_bytes_per_s')}, copy {gbs('gpu_copy_bytes_per_s')}; "
          f"JS memcpy {gbs('js_copy_bytes_per_s')}; cpus {result['machine']['cpus']}, "
          f"load avg {result['machine']['loadavg_start'][0]:.2f} -> {result['machine']['loadavg_end'][0]:.2f}; "
          f"bench took {result['seconds']} s")


def write_chart(result: dict, path: Path) -> None:
    """Decode and prefill tok/s (log scale, with the decode ceilings), peak memory and load times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    names = list(configs)
    if not names:
        return
    x = range(len(names))
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.8 * len(names) + 3), 14), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1, 1]})
    speed, mem, load = axes
    w = 0.38
    dec = [configs[n]["median"].get("decode_tok_s") or 0 for n in names]
    pre = [configs[n]["median"].get("prefill_tok_s") or 0 for n in names]
    speed.bar([i - w / 2 for i in x], dec, w, label="decode")
    speed.bar([i + w / 2 for i in x], pre, w, label="prefill")
    ceil = [(configs[n].get("decode_ceiling") or {}).get("tok_s") for n in names]
    speed.scatter([i - w / 2 for i, c in zip(x, ceil) if c], [c for c in ceil if c], marker="_", s=300, c="k",
                  label="decode ceiling (bandwidth)")
    speed.set_yscale("log")
    speed.set_ylabel("tokens / s")
    speed.set_title("speed (median)")
    speed.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    mem.bar(list(x), [(configs[n]["memory"]["peak_pss_bytes"] or 0) / 2**20 for n in names], 0.6, color="tab:purple")
    mem.set_ylabel("MiB")
    mem.set_title("peak browser memory (PSS)")
    load.bar([i - w / 2 for i in x], [configs[n]["load_cold_s"] or 0 for n in names], w, label="cold")
    load.bar([i + w / 2 for i in x], [configs[n]["load_warm_s"] or 0 for n in names], w, label="warm")
    load.set_ylabel("s")
    load.set_title("load time")
    load.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    load.set_xticks(list(x))
    load.set_xticklabels(names, rotation=50, ha="right", fontsize=8)
    m = result["machine"]
    tokens = f"{result['max_tokens']}" + (f" ({result['webgpu_tokens']} on WebGPU)"
                                          if result["webgpu_tokens"] != result["max_tokens"] else "")
    fig.suptitle(f"{result['model']}: {tokens} greedy tokens, median of {result['runs']} "
                 f"(chromium {m['chromium']}, {m['cpus']} cpus, load avg {m['loadavg_start'][0]:.1f})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------

def select(patterns: str, known: list[str]) -> list[str]:
    chosen = []
    for pat in (p.strip() for p in patterns.split(",") if p.strip()):
        hits = fnmatch.filter(known, pat)
        if not hits:
            raise SystemExit(f"error: no configuration matches {pat!r}; known: {', '.join(known)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def parse_args(argv, default_configs, default_json, default_png):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "bench" / "models"),
                        help="folder of the webbuild builds (missing ones are built)")
    parser.add_argument("--source", default=MODEL, help="catalog name or checkpoint of the webbuild builds")
    parser.add_argument("--name", help="model id of the builds (default: the source's name)")
    parser.add_argument("--gguf", help="GGUF for wllama (default: the source when it is a GGUF)")
    parser.add_argument("--configs", default=",".join(default_configs),
                        help="comma-separated names or patterns (--list shows them)")
    parser.add_argument("--question", default=QUESTION, help="the user message (transformers.js: always the default)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    parser.add_argument("--webgpu-tokens", type=int, help="new tokens per run on WebGPU (default --tokens)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (after one warm-up)")
    parser.add_argument("--mem-interval", type=float, default=1.5, help="seconds between memory samples")
    parser.add_argument("--bandwidth-mb", type=int, default=64, help="buffer size of the bandwidth probes")
    parser.add_argument("--rebuild", action="store_true", help="build the webbuild folders again")
    parser.add_argument("--no-reference", action="store_true", help="skip the CPU reference builds and texts")
    parser.add_argument("--json", default=str(default_json))
    parser.add_argument("--png", default=str(default_png) if default_png else "",
                        help="chart file ('' for none)")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    return parser.parse_args(argv)


class Plan:
    """What a run needs before any browser starts: the builds, weights, references, and what is skipped."""

    def __init__(self, args):
        self.args = args
        self.names = select(args.configs, ALL_CONFIGS)
        self.webgpu_tokens = args.webgpu_tokens or args.tokens
        self.tokens = {n: self.webgpu_tokens if "webgpu" in n else args.tokens for n in self.names}
        self.models = Path(args.models)
        source = Path(args.source).expanduser()
        self.model_name = args.name or (source.name if source.exists() else args.source)
        self.skipped: dict = {}
        self.weights: dict = {}
        self.refs: dict = {}  # config -> (reference text or None, kind); config + "#ids" -> reference ids
        self.ref_runs: dict = {}
        self.versions = {key: _npm_version(pkg) for key, pkg in (("wllama", WLLAMA_DIR), ("transformers.js", TJS_DIR))}
        self._webbuild()
        self._wllama(source)
        self._tjs()

    def _skip(self, names: list[str], engine: str, why: str) -> None:
        print(f"skipping {', '.join(names)}: {why}", file=sys.stderr, flush=True)
        self.skipped.update({n: {"engine": engine, "error": why} for n in names})

    def _webbuild(self) -> None:
        args = self.args
        self.wb = [n for n in self.names if n.startswith("webbuild-")]
        quants = [q for q in QUANTIZATIONS if any(webbuild_parts(n)[1] == q for n in self.wb)]
        targets = ("webgpu",) if args.no_reference else ("webgpu", "cpu")
        self.folders = ensure_builds(self.models, args.source, self.model_name, quants, targets, args.rebuild)
        for n in self.wb:
            self.weights[n] = shard_weights(self.folders[webbuild_parts(n)[1], "webgpu"])
        if args.no_reference or not self.wb:
            return
        self.ref_runs = references(self.folders, quants, max(self.tokens[n] for n in self.wb), args.question)
        for n in self.wb:
            q = webbuild_parts(n)[1]
            r = self.ref_runs[q]
            self.refs[n] = (decode_text(r["folder"], r["ids"][:self.tokens[n]]), f"cpu-{q}")

    def _wllama(self, source: Path) -> None:
        from webbuild.catalog import resolve_source

        self.gguf = Path(self.args.gguf) if self.args.gguf else None
        if self.gguf is None:
            try:
                resolved = resolve_source(self.args.source)
                self.gguf = resolved if resolved.suffix == ".gguf" else None
            except Exception:  # noqa: BLE001 - then wllama has nothing to run
                pass
        self.wl = [n for n in self.names if n.startswith("wllama-")]
        if self.wl and (self.gguf is None or not self.gguf.is_file() or not WLLAMA_DIR.is_dir()):
            why = (f"{WLLAMA_DIR} is missing (npm ci)" if not WLLAMA_DIR.is_dir()
                   else f"no GGUF for the source (--gguf {self.gguf or ''} missing)")
            self._skip(self.wl, "wllama", why)
            self.wl = []
        for n in self.wl:
            self.weights[n] = gguf_weights(self.gguf)

    def _tjs(self) -> None:
        self.tj = [n for n in self.names if n in TJS_CONFIGS]
        self.tjs_module = self.onnx_dir = None
        if not self.tj:
            return
        try:
            self.tjs_module, self.onnx_dir = tjs_setup()
        except BaseException as err:  # noqa: BLE001 - the peer is optional (its checks raise SystemExit)
            if isinstance(err, KeyboardInterrupt):
                raise
            self._skip(self.tj, "transformers.js", f"transformers.js peer unavailable: {type(err).__name__}: {err}")
            self.tj = []
            return
        for n in self.tj:
            self.weights[n] = onnx_weights(self.onnx_dir, TJS_CONFIGS[n][1])
        fp32 = [n for n in self.tj if TJS_CONFIGS[n][1] == "fp32"]
        if not fp32 or self.args.no_reference:
            return
        if self.args.question != QUESTION:
            print("transformers.js reference: only for the default question", file=sys.stderr)
            return
        try:
            started = time.monotonic()
            ids, text = tjs_reference(max(self.tokens[n] for n in fp32))
        except Exception as err:  # noqa: BLE001
            print(f"transformers.js reference failed: {err}", file=sys.stderr)
            return
        self.ref_runs["torch-fp32"] = {"folder": self.onnx_dir, "ids": ids,
                                       "seconds": round(time.monotonic() - started, 1)}
        for n in fp32:
            self.refs[n] = (text if len(ids) == self.tokens[n] else None, "torch-fp32")
            self.refs[n + "#ids"] = ids[:self.tokens[n]]

    def specs(self, stack) -> list[Config]:
        """The configurations, with their servers entered on `stack` (before Playwright's loop starts:
        some servers run their set-up on the calling thread)."""
        args, out = self.args, []
        if self.wb:
            url = stack.enter_context(webbuild_server(self.models))
            for n in self.wb:
                backend, q, threads = webbuild_parts(n)
                folder = self.folders[q, "webgpu"]
                window = json.loads((folder / "chat-config.json").read_text())["context_window_size"]
                options = {"backend": backend, "contextWindow": min(CONTEXT_WINDOW, window),
                           **({"threads": threads} if threads else {}), **({"worker": True} if in_worker(n) else {})}
                out.append(Config(
                    n, {"engine": "webbuild", "backend": backend, "quantization": q, "threads": threads,
                        "worker": in_worker(n), "folder": folder.name},
                    url, streamed_run(WEBBUILD_GEN_JS, webbuild_metrics, args.question), self.tokens[n],
                    load=evaluate_load(WEBBUILD_LOAD_JS, [f"{url}models/{folder.name}/", options]),
                    count_gpu=backend == "webgpu"))
        if self.wl:
            url = stack.enter_context(wllama_server(self.gguf))
            templated = next((f for (_, target), f in self.folders.items() if target == "webgpu"), None)
            # the same prompt text as webbuild's (raw completion); the GGUF's own template without webbuild builds
            run = (streamed_run(WLLAMA_RAW_GEN_JS, wllama_metrics, rendered_prompt(templated, args.question))
                   if templated is not None else streamed_run(WLLAMA_GEN_JS, wllama_metrics, args.question))
            for n in self.wl:
                threads = int(n.split("-")[1].rstrip("t"))
                out.append(Config(
                    n, {"engine": "wllama", "version": self.versions["wllama"], "weights": self.gguf.name,
                        "threads": threads, "prompt": "webbuild's template" if templated else "the GGUF's"},
                    url, run, self.tokens[n],
                    load=evaluate_load(WLLAMA_LOAD_JS, [f"{url}model.gguf", threads])))
        if self.tj:
            try:
                url = stack.enter_context(self.tjs_module.serve(self.onnx_dir))
            except BaseException as err:  # noqa: BLE001
                if isinstance(err, KeyboardInterrupt):
                    raise
                self._skip(self.tj, "transformers.js", f"serve: {type(err).__name__}: {err}")
                self.tj = []
            messages = [{"role": "user", "content": args.question}]
            for n in self.tj:
                device, dtype, threads = TJS_CONFIGS[n]
                out.append(Config(
                    n, {"engine": "transformers.js", "version": self.versions["transformers.js"], "device": device,
                        "dtype": dtype, "threads": threads, "weights": self.onnx_dir.name},
                    None, tjs_generate(self.tjs_module, messages), self.tokens[n],
                    load=tjs_load(self.tjs_module, url, self.onnx_dir.name, device, dtype, threads),
                    count_gpu=device == "webgpu"))
        return sorted(out, key=lambda c: self.names.index(c.name))


def _npm_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def measure_bandwidth(playwright, url: str, mb: int) -> tuple[dict, str]:
    """(BANDWIDTH_JS's result, chromium version), in a browser of its own."""
    print("measuring bandwidth ...", file=sys.stderr, flush=True)
    browser = launch_chromium(playwright)
    try:
        page = browser.new_page()
        page.goto(url)
        return page.evaluate(BANDWIDTH_JS, [mb, 5]), browser.version
    except Exception as err:  # noqa: BLE001 - recorded
        return {"error": str(err)}, browser.version
    finally:
        browser.close()


def main(argv=None, benchmark: str = "peers", default_configs=ALL_CONFIGS,
         default_json=REPO / "out" / "bench" / "peers.json", default_png=REPO / "out" / "bench" / "peers.png") -> int:
    args = parse_args(argv, default_configs, default_json, default_png)
    if args.list:
        print("\n".join(ALL_CONFIGS))
        return 0
    from contextlib import ExitStack

    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    loadavg_start = os.getloadavg()
    plan = Plan(args)
    with ExitStack() as stack:
        plain_url = stack.enter_context(isolated_server())
        specs = plan.specs(stack)
        p = stack.enter_context(sync_playwright())
        bandwidth, chromium = measure_bandwidth(p, plain_url, args.bandwidth_mb)
        with MemorySampler(args.mem_interval) as sampler:
            configs, failed = measure(p, specs, args.runs, sampler)
        plan.skipped.update(failed)

    derive(configs, bandwidth, plan.weights, plan.refs)
    first = next(iter(configs.values()), {}).get("page", {})
    result = {
        "benchmark": benchmark, "date": timestamp(), "model": plan.model_name, "question": args.question,
        "max_tokens": args.tokens, "webgpu_tokens": plan.webgpu_tokens, "runs": args.runs, "greedy": True,
        "stop_tokens_banned": True, "context_window": CONTEXT_WINDOW,
        "machine": {"cpus": os.cpu_count(), "hardware_concurrency": first.get("hardware_concurrency"),
                    "cross_origin_isolated": first.get("cross_origin_isolated"), "chromium": chromium,
                    "user_agent": first.get("user_agent"), "loadavg_start": loadavg_start,
                    "loadavg_end": os.getloadavg(), "loadavg_runs": loadavg_summary(configs)},
        "adapter": bandwidth.pop("adapter", None), "bandwidth": bandwidth,
        "references": {q: {"kind": q if q.startswith("torch") else f"cpu-{q}", "folder": Path(r["folder"]).name,
                           "tokens": len(r["ids"]), "seconds": r["seconds"]} for q, r in plan.ref_runs.items()},
        "configs": configs, "skipped": plan.skipped,
        "ratios": ratios(configs, lambda n: n.startswith("webbuild-")),
        "seconds": round(time.monotonic() - started, 1)}
    write_result(args.json, result, echo=False)
    print_table(result)
    print(f"wrote {args.json}")
    if args.png:
        try:
            write_chart(result, Path(args.png))
            print(f"wrote {args.png}")
        except ImportError as err:
            print(f"no chart: {err} (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
