"""Per-kernel GPU time of one WebGPU decode step, in headless chromium (SwiftShader without a GPU).

The page records every compute dispatch of one decoded token (pipeline, bind groups, grid and the
uniform arguments as they were written), then replays each dispatch alone, `--repeat` times in one
submit, and times it to the queue's completion. Times are grouped by kernel (the WGSL entry point)
and printed with their share of the step, next to the time of the whole recorded step replayed in
one submit. It says where a decode step's time goes; it does not change the model.

Usage: python bench/webgpu_profile.py [--models out/bench/models] [--model smollm2-135m-instruct-q4f32_1]
                                      [--repeat 5] [--json out/bench/webgpu-profile.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium, webbuild_server  # noqa: E402

# Installed before the page's scripts: names pipelines by entry point, keeps bind-group entries
# and the last bytes written to each buffer, and records dispatches while `__profile.on`.
RECORD_JS = """(() => {
  if (!self.GPUDevice || self.__profile) return;
  const prof = self.__profile = {on: false, steps: [], device: null};
  const names = new WeakMap(), groups = new WeakMap(), written = new WeakMap();
  const D = GPUDevice.prototype, P = GPUComputePassEncoder.prototype;
  const makePipe = D.createComputePipeline, makePipeAsync = D.createComputePipelineAsync;
  D.createComputePipeline = function (d) {
    const p = makePipe.call(this, d); names.set(p, d.compute.entryPoint); return p; };
  D.createComputePipelineAsync = async function (d) {
    const p = await makePipeAsync.call(this, d); names.set(p, d.compute.entryPoint); return p; };
  const makeGroup = D.createBindGroup;
  D.createBindGroup = function (d) {
    prof.device = this; const g = makeGroup.call(this, d); groups.set(g, d); return g; };
  const write = GPUQueue.prototype.writeBuffer;
  GPUQueue.prototype.writeBuffer = function (buf, off, data, dataOff, size) {
    if (off === 0 && buf.usage & GPUBufferUsage.UNIFORM) {
      const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
                                              : new Uint8Array(data);
      written.set(buf, bytes.slice());
    }
    return write.apply(this, arguments);
  };
  const setPipe = P.setPipeline, setGroup = P.setBindGroup, dispatch = P.dispatchWorkgroups;
  P.setPipeline = function (p) { this.__pipe = p; return setPipe.call(this, p); };
  P.setBindGroup = function (i, g) { (this.__groups ??= [])[i] = g; return setGroup.apply(this, arguments); };
  P.dispatchWorkgroups = function (x, y = 1, z = 1) {
    if (prof.on) {
      const desc = groups.get(this.__groups[0]);
      const uniforms = desc.entries.map((e) => written.get(e.resource.buffer) ?? null);
      prof.steps.push({pipe: this.__pipe, name: names.get(this.__pipe) ?? '?', layout: desc.layout,
                       entries: desc.entries, uniforms, grid: [x, y, z]});
    }
    return dispatch.apply(this, arguments);
  };
})();"""

PROFILE_JS = """async ([url, question, repeat]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, {backend: 'webgpu', prefetchShaders: true});
  const prof = self.__profile;
  const ask = async (tokens, onChunk) => {
    const stream = await engine.chat.completions.create({
      messages: [{role: 'user', content: question}], temperature: 0, max_tokens: tokens, stream: true});
    let n = 0;
    for await (const chunk of stream) { onChunk?.(n++, chunk); }
  };
  await ask(4);  // warm-up: every pipeline compiled and used once
  await engine.resetChat();
  // record the dispatches between the 2nd and 3rd streamed chunk: one decode step
  let stepStart = 0, stepMs = 0;
  await ask(4, (n) => {
    if (n === 1) { prof.on = true; stepStart = performance.now(); }
    if (n === 2) { prof.on = false; stepMs = performance.now() - stepStart; }
  });
  const device = prof.device, steps = prof.steps;
  const bind = (s) => {
    const entries = s.entries.map((e, i) => {
      if (!s.uniforms[i]) return e;
      const buf = device.createBuffer({size: Math.max(16, s.uniforms[i].byteLength),
                                       usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST});
      device.queue.writeBuffer(buf, 0, s.uniforms[i]);
      return {binding: e.binding, resource: {buffer: buf, size: s.uniforms[i].byteLength}};
    });
    return device.createBindGroup({layout: s.layout, entries});
  };
  const run = async (list, times) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const [s, g] of list) {
      pass.setPipeline(s.pipe); pass.setBindGroup(0, g);
      for (let r = 0; r < times; r++) pass.dispatchWorkgroups(...s.grid);
    }
    pass.end();
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  const bound = steps.map((s) => [s, bind(s)]);
  await run(bound, 1);  // warm
  const wholeMs = await run(bound, 1);
  const empty = await (async () => { const t0 = performance.now(); device.queue.submit([]);
                                     await device.queue.onSubmittedWorkDone(); return performance.now() - t0; })();
  const kernels = [];
  for (const pair of bound) {
    const ms = (await run([pair], repeat) - empty) / repeat;
    kernels.push({name: pair[0].name, grid: pair[0].grid, ms});
  }
  await engine.unload();
  const info = (await navigator.gpu.requestAdapter()).info;
  return {step_ms: stepMs, replay_ms: wholeMs, empty_submit_ms: empty, kernels,
          adapter: {vendor: info.vendor, architecture: info.architecture, description: info.description}};
}"""

QUESTION = "What is the capital of France?"


def group(kernels: list[dict]) -> list[dict]:
    """Per-kernel rows -> one row per entry point (count, total ms, grids), biggest first."""
    rows: dict[str, dict] = {}
    for k in kernels:
        row = rows.setdefault(k["name"], {"name": k["name"], "count": 0, "ms": 0.0, "grids": []})
        row["count"] += 1
        row["ms"] += max(k["ms"], 0.0)
        if k["grid"] not in row["grids"]:
            row["grids"].append(k["grid"])
    total = sum(r["ms"] for r in rows.values()) or 1.0
    for r in rows.values():
        r["ms"] = round(r["ms"], 3)
        r["share"] = round(r["ms"] / total, 3)
    return sorted(rows.values(), key=lambda r: -r["ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "bench" / "models"))
    parser.add_argument("--model", default="smollm2-135m-instruct-q4f32_1")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each dispatch per timed submit")
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "webgpu-profile.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with webbuild_server(Path(args.models)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context()
        context.add_init_script(RECORD_JS)
        page = context.new_page()
        page.goto(url)
        r = page.evaluate(PROFILE_JS, [f"{url}models/{args.model}/", QUESTION, args.repeat])
        browser.close()
    rows = group(r["kernels"])
    result = {"model": args.model, "adapter": r["adapter"], "dispatches": len(r["kernels"]),
              "step_ms": round(r["step_ms"], 1), "replay_ms": round(r["replay_ms"], 1),
              "sum_of_kernels_ms": round(sum(row["ms"] for row in rows), 1), "kernels": rows}
    write_result(args.json, result, echo=False)
    print(f"{args.model} on {r['adapter']['description'] or r['adapter']['vendor']}: {len(r['kernels'])} dispatches, "
          f"step {result['step_ms']} ms (replayed {result['replay_ms']} ms, "
          f"kernels alone {result['sum_of_kernels_ms']} ms)")
    for row in rows:
        print(f"  {row['ms']:9.2f} ms {100 * row['share']:5.1f}%  x{row['count']:<3} {row['name']}  {row['grids'][:2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
