"""The TVM web runtime build, the wasm linker and the node WebGPU harness, end to end.

Compiles small Relax modules for WebGPU + wasm32, links them with the cached TVM web runtime
(webbuild.compile.wasm_runtime / wasm_link) and runs them in node (Dawn + SwiftShader) through
tests/js/tvm_node.mjs with the npm tvmjs runtime, comparing against numpy. The KV-cache test
drives a 2-layer paged-KV-cache language model exactly as the real LLM is driven (model-folder
mode: tensor-cache.json, embed / prefill / decode / create_paged_kv_cache).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node_harness import run_model, run_toy
from webbuild.arch.kv_model import kv_model_spec
from webbuild.compile import wasm_link, wasm_runtime
from webbuild.errors import ToolchainError
from webbuild.kernels.paged_kv_cache import KVCacheSpec, create_kv_cache
from webbuild.shard.writer import write_shards
from webbuild.tvm_patches.merge_state import replace_racy_merge_state


def _target():
    from webbuild.backends.webgpu import WebGPUBackend

    return WebGPUBackend().target()


@pytest.fixture(scope="module")
def runtime():
    """The real (user-cache) runtime objects; compiled once (~1.5 min), then reused."""
    return wasm_runtime.build_runtime()


# ----------------------------------------------------------------------------- toy module


def _toy_module():
    from tvm.relax.frontend import nn

    class Toy(nn.Module):
        def __init__(self):
            self.norm = nn.RMSNorm(16, -1, 1e-5, bias=False)
            self.lin = nn.Linear(16, 8, bias=False)

        def forward(self, x):
            return nn.op.silu(self.lin(self.norm(x)))

    return Toy().export_tvm(spec={"forward": {"x": nn.spec.Tensor([4, 16], "float32")}})


def test_toy_module_runs_in_node_webgpu(runtime, tmp_path):
    import tvm

    mod, params = _toy_module()
    ex = tvm.compile(mod, target=_target())
    events = []
    info = wasm_link.export_wasm(ex, tmp_path / "toy.wasm", opt_level="O1", progress=events.append)
    assert info["bytes"] > 100_000 and (tmp_path / "toy.wasm").exists()
    assert any(e["stage"] == "link" for e in events) and any(e["stage"] == "runtime" for e in events)
    # the module must import nothing the JS runtime does not provide
    assert wasm_link.unexpected_imports(tmp_path / "toy.wasm") == []

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16)).astype("float32")
    w_norm = rng.standard_normal(16).astype("float32")
    w_lin = rng.standard_normal((8, 16)).astype("float32")
    (y,) = run_toy(tmp_path / "toy.wasm", "forward", [x, w_norm, w_lin])

    h = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w_norm
    ref = h @ w_lin.T
    ref = ref / (1 + np.exp(-ref))
    assert y.shape == (4, 8)
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- KV-cache LM

V, H, NQ, NKV, D, L, F = 64, 128, 4, 2, 32, 2, 96
THETA = 10000.0
# WebGPU lands <= 1.5e-6 from a float64 forward pass (with webbuild's precise sin/cos for RoPE;
# WGSL's own sin/cos gave ~2e-4, see tvm_patches/webgpu_trig.py); garbage (a wrong kernel, a broken KV
# cache) is off by ~1.
KV_ATOL = 2e-5


def _tiny_lm():
    """A 2-layer GQA transformer with a TIR paged KV cache, exported like the real LLM."""
    from tvm import te
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op

    target = _target()

    class Layer(nn.Module):
        def __init__(self):
            self.in_norm = nn.RMSNorm(H, -1, 1e-5, bias=False)
            self.qkv = nn.Linear(H, (NQ + 2 * NKV) * D, bias=False)
            self.o = nn.Linear(NQ * D, H, bias=False)
            self.post_norm = nn.RMSNorm(H, -1, 1e-5, bias=False)
            self.up = nn.Linear(H, F, bias=False)
            self.down = nn.Linear(F, H, bias=False)

    class TinyLM(nn.Module):
        def __init__(self):
            self.embed_tokens = nn.Embedding(V, H)
            self.layers = nn.ModuleList([Layer() for _ in range(L)])
            self.norm = nn.RMSNorm(H, -1, 1e-5, bias=False)
            self.lm_head = nn.Linear(H, V, bias=False)

        def embed(self, input_ids):
            return self.embed_tokens(input_ids)

        def _body(self, x, kv):
            b, s, _ = x.shape
            for i, ly in enumerate(self.layers):
                qkv = op.reshape(ly.qkv(ly.in_norm(x)), (b, s, NQ + 2 * NKV, D))
                o = kv.attention_with_fused_qkv(i, qkv, NQ, sm_scale=D**-0.5)
                x = x + ly.o(op.reshape(o, (b, s, NQ * D)))
                x = x + ly.down(op.silu(ly.up(ly.post_norm(x))))
            x = self.norm(x)

            def last(t):
                bb, ss, dd = t.shape
                return te.compute((bb, 1, dd), lambda i, _, k: t[i, ss - 1, k], name="last")

            return self.lm_head(op.tensor_expr_op(last, "last", [x])), kv

        def prefill(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def decode(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size,
                                  page_size, support_sliding_window):
            spec = KVCacheSpec(num_layers=L, num_heads=NQ, num_kv_heads=NKV, head_dim=D, rope_theta=THETA,
                               rope_scaling=None, rotary_dim=D)
            return create_kv_cache(spec, "float32", max_batch_size, max_total_seq_len, prefill_chunk_size,
                                   page_size, support_sliding_window, target=target, fused_decode=True)

    spec = kv_model_spec(H, "float32", param_mode="plain")
    mod, params = TinyLM().export_tvm(spec=spec)
    return replace_racy_merge_state(mod), params


def _rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w


def _rope(x, pos):
    """Rotate-half RoPE on (s, heads, D) at positions pos (s,)."""
    half = D // 2
    inv = THETA ** (-np.arange(half, dtype=np.float64) * 2 / D)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def _reference_logits(p, tokens):
    """Logits after each position of `tokens` (float64 numpy forward pass)."""
    x = p["embed_tokens.weight"][tokens].astype(np.float64)
    s = len(tokens)
    pos = np.arange(s)
    for i in range(L):
        q_k_v = (_rms(x, p[f"layers.{i}.in_norm.weight"]) @ p[f"layers.{i}.qkv.weight"].T).reshape(s, NQ + 2 * NKV, D)
        q, k, v = _rope(q_k_v[:, :NQ], pos), _rope(q_k_v[:, NQ:NQ + NKV], pos), q_k_v[:, NQ + NKV:]
        out = np.empty((s, NQ, D))
        for h in range(NQ):
            kh = h // (NQ // NKV)
            scores = q[:, h] @ k[:, kh].T * D**-0.5
            scores = np.where(np.tril(np.ones((s, s), bool)), scores, -np.inf)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, h] = (w / w.sum(-1, keepdims=True)) @ v[:, kh]
        x = x + out.reshape(s, NQ * D) @ p[f"layers.{i}.o.weight"].T
        u = _rms(x, p[f"layers.{i}.post_norm.weight"]) @ p[f"layers.{i}.up.weight"].T
        x = x + (u / (1 + np.exp(-u))) @ p[f"layers.{i}.down.weight"].T
    return _rms(x, p["norm.weight"]) @ p["lm_head.weight"].T


@pytest.fixture(scope="module")
def tiny_lm_folder(runtime, tmp_path_factory):
    import tvm

    folder = tmp_path_factory.mktemp("tiny_lm")
    mod, param_specs = _tiny_lm()
    ex = tvm.compile(mod, target=_target())
    wasm_link.export_wasm(ex, folder / "model.wasm", opt_level="O1")
    rng = np.random.default_rng(1)
    params = []
    for name, param in param_specs:
        shape = [int(d) for d in param.shape]
        scale = 1.0 if name.endswith("norm.weight") else (0.5 if "embed" in name else shape[-1] ** -0.5)
        value = rng.standard_normal(shape).astype("float32") * scale
        if name.endswith("norm.weight"):
            value = 1.0 + 0.1 * value
        params.append((name, value.astype("float32")))
    # small shards so the model spans several shard files, as a real one does
    write_shards(folder, params, {}, shard_bytes=64 * 1024)
    return folder, dict(params)


def test_kv_cache_prefill_and_decode_match_numpy(tiny_lm_folder):
    folder, params = tiny_lm_folder
    prompt = [3, 17, 42, 5, 60, 9, 1, 33, 33, 8, 61, 2, 27, 50, 14, 7, 44, 19]
    n_decode = 4
    # chunk 8 < prompt length: prefill runs in 3 chunks (8 + 8 + 2) over the same sequence,
    # which spans two KV pages (the TIR kernels fix page_size at 16)
    r = run_model(folder, prompt, decode=n_decode, prefill_chunk=8, page_size=16, all_logits=True,
                  no_prefetch_shaders=True)
    assert r["logits_shape"] == [1, 1, V]
    ref = _reference_logits(params, prompt)[-1]
    np.testing.assert_allclose(np.array(r["logits"]), ref, atol=KV_ATOL, rtol=0)

    # greedy decode: every step must agree with the numpy forward pass over the whole sequence
    seq = list(prompt)
    ref_tokens = []
    for step in range(n_decode):
        logits = _reference_logits(params, seq)[-1]
        if step > 0:
            np.testing.assert_allclose(np.array(r["decode_logits"][step - 1]), logits, atol=KV_ATOL, rtol=0)
        ref_tokens.append(int(np.argmax(logits)))
        seq.append(ref_tokens[-1])
    assert r["tokens"] == ref_tokens


def test_kv_cache_single_chunk_prefill(tiny_lm_folder):
    """The whole prompt (more than one KV page) in one prefill chunk, then decode."""
    folder, params = tiny_lm_folder
    prompt = list(range(1, 20))
    r = run_model(folder, prompt, decode=2, no_prefetch_shaders=True)
    np.testing.assert_allclose(np.array(r["logits"]), _reference_logits(params, prompt)[-1], atol=KV_ATOL, rtol=0)
    assert r["kv_cache"]["prefill_chunk_size"] >= len(prompt)


# ----------------------------------------------------------------------------- runtime cache


def test_cache_key_depends_on_flags():
    base = wasm_runtime.cache_key(wasm_runtime.DEFAULT_CFLAGS)
    assert base == wasm_runtime.cache_key(wasm_runtime.DEFAULT_CFLAGS)
    assert base != wasm_runtime.cache_key(("-O2", "-std=c++17", "-Wno-ignored-attributes"))
    assert base != wasm_runtime.cache_key((*wasm_runtime.DEFAULT_CFLAGS, "-DNDEBUG"))


def test_second_build_reuses_cache(runtime, monkeypatch):
    mtimes = [o.stat().st_mtime_ns for o in runtime.objects]

    def no_compile(*args, **kwargs):
        raise AssertionError("the runtime was recompiled although it is cached")

    monkeypatch.setattr(wasm_runtime, "_compile_one", no_compile)
    events = []
    again = wasm_runtime.build_runtime(progress=events.append)
    assert again.built is False
    assert again.objects == runtime.objects
    assert [o.stat().st_mtime_ns for o in again.objects] == mtimes
    assert events and events[-1]["stage"] == "runtime" and events[-1]["loaded"] == events[-1]["total"]


def test_cache_miss_builds_atomically(monkeypatch, tmp_path):
    """A miss compiles every unit (here faked) and publishes the folder only when complete."""
    monkeypatch.setenv("WEBBUILD_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_compile(emxx, src, out, flags, env):
        calls.append(src.name)
        if src.name == "tvmjs_support.cc":
            raise ToolchainError("boom")
        out.write_bytes(b"\0asm")
        return 0.0

    monkeypatch.setattr(wasm_runtime, "_compile_one", fake_compile)
    with pytest.raises(ToolchainError):
        wasm_runtime.build_runtime(jobs=1)
    root = tmp_path / "wasm-runtime"
    assert [p.name for p in root.iterdir()] == []  # nothing half-written left behind

    monkeypatch.setattr(wasm_runtime, "_compile_one",
                        lambda emxx, src, out, flags, env: (calls.append(src.name), out.write_bytes(b"x"), 0.0)[-1])
    events = []
    built = wasm_runtime.build_runtime(jobs=2, progress=events.append)
    assert built.built and all(o.exists() for o in built.objects)
    assert (built.directory / "manifest.json").exists()
    loaded = [e["loaded"] for e in events if e["file"]]
    assert loaded == list(range(1, len(built.objects) + 1))
    assert all(e["total"] == len(built.objects) for e in events)


def test_missing_emcc_is_a_toolchain_error(monkeypatch):
    monkeypatch.setenv("EMCC", "/nonexistent/emcc")
    with pytest.raises(ToolchainError) as err:
        wasm_runtime.build_runtime()
    assert "emscripten" in str(err.value) and err.value.fix and "make deps" in err.value.fix


def test_link_failure_reports_emcc_stderr(runtime, tmp_path):
    bogus = tmp_path / "bogus.o"
    bogus.write_bytes(b"this is not an object file")
    with pytest.raises(ToolchainError) as err:
        wasm_link.link_wasm(tmp_path / "out.wasm", [bogus])
    assert "bogus.o" in str(err.value)
    assert not (tmp_path / "out.wasm").exists()
    assert [p for p in tmp_path.iterdir() if p.suffix == ".wasm"] == []


def _build_node_program(source: str, out: Path, objects=()) -> None:
    """Compile tests/<source> (plus runtime `objects`) with em++ into a node program at `out`,
    with webbuild's support headers first on the include path, as the runtime build has them."""
    import subprocess

    support = wasm_runtime.SUPPORT_DIR
    tvm_dir, ffi_dir = wasm_runtime.tvm_dirs()
    cmd = [wasm_runtime.find_tool("em++"), "-O1", "-std=c++17", "-Wno-ignored-attributes",
           f"-I{support / 'include'}", f"-I{support / 'src'}", f"-I{support / '3rdparty' / 'compiler-rt'}",
           f"-I{tvm_dir / 'include'}", f"-I{ffi_dir / 'include'}",
           "-sENVIRONMENT=node", "-sNODERAWFS=1", "-sALLOW_MEMORY_GROWTH=1", "-sWASM_BIGINT=1",
           "-sERROR_ON_UNDEFINED_SYMBOLS=0", "-sWARN_ON_UNDEFINED_SYMBOLS=0",
           str(Path(__file__).parent / source), *(str(o) for o in objects), "-o", str(out)]
    build = subprocess.run(cmd, capture_output=True, text=True, env=wasm_runtime.emscripten_env())
    assert build.returncode == 0, build.stderr[-3000:]


def _run_node_program(program: Path, *args: str):
    import subprocess

    # emscripten 3.1.6's loader prefers fetch() when it exists, which cannot read local paths
    return subprocess.run(["node", "--no-experimental-fetch", str(program), *args], capture_output=True,
                          text=True)


def test_runtime_support_headers(tmp_path):
    """webbuild's stand-ins for the headers missing from the wheels, exercised directly."""
    out = tmp_path / "check.js"
    _build_node_program("runtime_support_check.cc", out)
    run = _run_node_program(out)
    assert run.returncode == 0 and "ALL OK" in run.stdout, run.stdout + run.stderr


def test_runtime_support_matches_pinned_tvm(runtime, tmp_path):
    """The web runtime, compiled with webbuild's support headers, reads exactly what the pinned
    host TVM writes and writes it back byte for byte: parameter dicts (serializer + io), a VM
    executable (what model.wasm embeds), a tensor's base64 JSON data; and float16 widening
    (compiler-rt's half conversion) agrees with numpy on all 65536 bit patterns."""
    import json

    import tvm
    from tvm.script import ir as I, relax as R

    rng = np.random.default_rng(0)
    arrays = {"w.f16": rng.standard_normal((3, 5)).astype("float16"), "b": np.arange(7, dtype="int64"),
              "empty": np.zeros((0, 4), "float32"), "scalar": np.array(2.5, "float32"),
              "u8": rng.integers(0, 255, (2, 2, 3), dtype="uint8"), "f32": rng.standard_normal(9).astype("float32")}
    host_params = bytes(tvm.runtime.save_param_dict({k: tvm.runtime.tensor(v) for k, v in arrays.items()}))
    (tmp_path / "host_params.bin").write_bytes(host_params)
    tensor = rng.standard_normal((4, 3)).astype("float32")
    b64 = json.loads(tvm.ir.save_json(tvm.runtime.tensor(tensor)))["nodes"][0]["data"]
    (tmp_path / "host_tensor.b64").write_text(b64)

    @I.ir_module
    class Scaled:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), y: R.Tensor((2, 3), "float32")):
            z = R.add(x, y)
            return R.multiply(z, R.const(np.arange(6, dtype="float32").reshape(2, 3)))

    exe = tvm.compile(Scaled, target="llvm").mod
    exe.write_to_file(str(tmp_path / "host_exe.bin"))

    program = tmp_path / "check.js"
    _build_node_program("runtime_support_tvm_check.cc", program, runtime.objects)
    run = _run_node_program(program, str(tmp_path))
    assert run.returncode == 0 and "DONE" in run.stdout, run.stdout + run.stderr[-3000:]

    assert (tmp_path / "wasm_params.bin").read_bytes() == host_params
    assert (tmp_path / "wasm_params_raw.bin").read_bytes() == b"".join(arrays[k].tobytes() for k in sorted(arrays))
    assert (tmp_path / "wasm_exe.bin").read_bytes() == (tmp_path / "host_exe.bin").read_bytes()
    assert (tmp_path / "wasm_exe.txt").read_text() == exe.get_function("as_text")()
    assert (tmp_path / "wasm_tensor.b64").read_text() == b64
    assert (tmp_path / "wasm_tensor_raw.bin").read_bytes() == tensor.tobytes()
    widened = np.frombuffer((tmp_path / "halves.bin").read_bytes(), "<f4")  # (65536,)
    halves = np.arange(65536, dtype="<u2").view("<f2")
    nan = np.isnan(halves)
    assert np.array_equal(widened[~nan].view("<u4"), halves[~nan].astype("<f4").view("<u4"))
    assert np.isnan(widened[nan]).all()
