"""`--quantization source`: a GGUF's own blocks kept exactly, against the file's dequantized model.

The reference is the `q0f32` build of the same file: its weights are `gguf.quants.dequantize` of
the stored blocks (independent of webbuild's containers), and its forward pass is proven against
transformers elsewhere. The `source` build must give the same logits (float32 rounding only).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from synthetic_gguf import F16_FIELDS, add_tiny_tokenizer, random_blocks, random_f16
from webbuild.build import BuildRequest, build
from webbuild.errors import UnsupportedQuantizationError
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 3, 11, 12, 4, 2, 7]
DECODE = [8, 13, 6, 14, 10]
TOL = 1e-4


def _small_blocks(ggml_type, shape, rng) -> np.ndarray:
    """Random valid blocks whose float16 scales are small (2^-9..2^-7), so activations stay O(1)."""
    raw = random_blocks(ggml_type, shape, rng)
    if ggml_type in F16_FIELDS:
        rows = raw.shape[0]
        _, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        blocks = raw.reshape(-1, type_size).copy()  # (n_blocks, type_size)
        for at in F16_FIELDS[ggml_type]:
            d = np.abs(random_f16(rng, blocks.shape[0]).astype(np.float32)) * np.float32(2.0 ** -6)
            d = np.clip(d, 2.0 ** -9, 2.0 ** -7).astype(np.float16)
            blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
        raw = blocks.reshape(rows, -1)
    return raw


def _write(path, hidden: int, ffn: int, types: dict[str, T], seed: int = 0):
    """A 2-layer llama GGUF (4 heads, 2 KV heads) with each tensor in the given ggml type."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(hidden // 4)
    writer.add_layer_norm_rms_eps(1e-5)
    add_tiny_tokenizer(writer)
    vocab = 16
    shapes = {"token_embd": (vocab, hidden), "output": (vocab, hidden), "attn_q": (hidden, hidden),
              "attn_k": (hidden // 2, hidden), "attn_v": (hidden // 2, hidden), "attn_output": (hidden, hidden),
              "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}
    for name in ("token_embd", "output"):
        raw = _small_blocks(types[name], shapes[name], rng)
        writer.add_tensor(f"{name}.weight", raw, raw_dtype=types[name])
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for layer in range(2):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            raw = _small_blocks(types[name], shapes[name], rng)
            writer.add_tensor(f"blk.{layer}.{name}.weight", raw, raw_dtype=types[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


LEGACY = {"token_embd": T.Q8_0, "output": T.Q5_1, "attn_q": T.Q4_1, "attn_k": T.Q4_1, "attn_v": T.Q4_1,
          "attn_output": T.Q4_0, "ffn_gate": T.Q4_1, "ffn_up": T.Q4_1, "ffn_down": T.Q5_0}
K_QUANTS = {"token_embd": T.Q6_K, "output": T.Q8_0, "attn_q": T.Q4_K, "attn_k": T.Q4_K, "attn_v": T.Q6_K,
            "attn_output": T.Q3_K, "ffn_gate": T.Q5_K, "ffn_up": T.Q2_K, "ffn_down": T.Q6_K}
CASES = {"legacy": (64, 128, LEGACY), "k_quants": (256, 256, K_QUANTS)}


def _run(folder) -> list[np.ndarray]:
    model = CpuModel(folder)
    out = [model.prefill(PROMPT)]
    out += [model.decode(t) for t in DECODE]
    return out


@pytest.mark.parametrize("case", CASES)
def test_source_build_answers_like_the_files_dequantized_model(case, tmp_path):
    hidden, ffn, types = CASES[case]
    path = _write(tmp_path / f"{case}.gguf", hidden, ffn, types)
    exact = build(BuildRequest(str(path), "source", tmp_path / "out", target="cpu", name="exact")).folder
    floats = build(BuildRequest(str(path), "q0f32", tmp_path / "out", target="cpu", name="float")).folder

    ours, ref = _run(exact), _run(floats)
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert np.abs(a - b).max() <= TOL * max(1.0, float(np.abs(b).max())), f"step {step}"
    assert max(float(np.abs(r).max()) for r in ref) > 0.1  # not a comparison of near-zero logits

    cache = json.loads((exact / "tensor-cache.json").read_text())
    formats = cache["metadata"]["weight_formats"]
    # the legacy blocks keep their float16 scales (two per uint32 word), the K-quants float32
    assert formats["tok_embed.weight"] == ("int8_g32_f16" if case == "legacy" else "int8_g16")
    assert formats["layers.0.mlp.down.weight"] == ("int8_g32_f16" if case == "legacy" else "int8_g16")
    assert formats["layers.0.attn.o.weight"] == ("int4_g32_f16" if case == "legacy" else "int4_g16")
    if case == "legacy":
        assert formats["layers.0.attn.qkv.weight"] == "int4_g32_min_f16"
        assert formats["layers.0.mlp.up.weight"] == "int4_g32_min_f16"
    else:  # Q4_K q/k with Q6_K v, Q5_K gate with Q2_K up: min and symmetric do not join
        assert "layers.0.attn.qkv.weight" not in formats
        assert formats["layers.0.mlp.up.weight"] == "int8_g16_min"
    exact_bytes = sum(p.stat().st_size for p in exact.glob("*.bin"))
    float_bytes = sum(p.stat().st_size for p in floats.glob("*.bin"))
    assert exact_bytes < float_bytes


def test_source_needs_a_quantized_source(tiny_llama_dirs, tmp_path):
    folder, _ = tiny_llama_dirs["untied"]
    with pytest.raises(UnsupportedQuantizationError):
        build(BuildRequest(str(folder), "source", tmp_path, target="cpu"))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def web_builds(tmp_path_factory):
    """case -> (webgpu folder, its CPU build), each built once for the module's tests."""
    made: dict = {}

    def get(case: str):
        if case not in made:
            root = tmp_path_factory.mktemp(f"exact_web_{case}")
            hidden, ffn, types = CASES[case]
            path = _write(root / f"{case}.gguf", hidden, ffn, types)
            web = build(BuildRequest(str(path), "source", root / "out", target="webgpu", name="web")).folder
            cpu = build(BuildRequest(str(path), "source", root / "out", target="cpu", name="cpu", prefill_chunk=8))
            made[case] = web, cpu.folder
        return made[case]

    return get


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("module", ["webgpu", "wasm-cpu"])
def test_browser_modules_of_a_source_build_match_its_cpu_build(module, case, web_builds):
    """model.wasm (WebGPU, Dawn + SwiftShader in node: webbuild's prefill GEMM (kernels.prefill_gemm)
    and fused decode GEMVs) and model-cpu.wasm read the same exact containers, legacy and K-quant: their
    prefill and decode logits and greedy tokens are the CPU build's."""
    from node_harness import run_model

    web, cpu = web_builds(case)
    native = CpuModel(cpu)
    options = {"device": "cpu", "wasm": "model-cpu.wasm"} if module == "wasm-cpu" else {"no_prefetch_shaders": True}
    result = run_model(web, PROMPT, decode=len(DECODE), packed_params=True, prefill_chunk=8, all_logits=True,
                       **options)
    got = [np.asarray(result["logits"], np.float32).reshape(-1)]
    got += [np.asarray(step, np.float32).reshape(-1) for step in result["decode_logits"]]
    expected = [native.prefill(PROMPT)] + [native.decode(t) for t in result["tokens"][:-1]]
    assert len(got) == len(expected) == len(DECODE)
    assert result["tokens"] == [int(np.argmax(e)) for e in expected]
    for step, (a, b) in enumerate(zip(got, expected)):
        assert np.abs(a - b).max() <= TOL * max(1.0, float(np.abs(b).max())), f"step {step}"


@pytest.mark.parametrize("case", CASES)
def test_cpu_vector_kernels_read_the_containers(case, tmp_path):
    """No container falls back to a generic kernel where webbuild has its own: every quantized
    matmul of the CPU modules is swapped for cpu_matmul's vector kernels (int4 groups of 16 are
    not whole vectors and stay generic)."""
    import dataclasses

    from tvm import s_tir, tirx

    from webbuild.arch import get_architecture
    from webbuild.arch.base import BuildOptions
    from webbuild.backends import get_backend
    from webbuild.kernels import cpu_matmul
    from webbuild.loaders import load_checkpoint
    from webbuild.quant.exact_plan import plan_formats
    from webbuild.quant.scheme import get_scheme

    hidden, ffn, types = CASES[case]
    checkpoint = load_checkpoint(_write(tmp_path / f"{case}.gguf", hidden, ffn, types))
    arch = get_architecture(checkpoint.config["model_type"])
    config = arch.parse_config(checkpoint.config, BuildOptions())
    plan = plan_formats(arch.weight_map(config), checkpoint.exact.format_of, checkpoint.exact.shape_of)
    scheme = dataclasses.replace(get_scheme("source"), formats={n: p.fmt for n, p in plan.items()})

    mod, _ = get_backend("cpu").export(arch, config, scheme)
    swapped = cpu_matmul.int4_matmul_pass()(mod)
    kinds = {"vector": 0, "generic": 0}
    for _, func in swapped.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        try:
            names = cpu_matmul._block_names(s_tir.Schedule(func))
        except Exception:  # noqa: BLE001  (no root block: not a TE matmul)
            continue
        if names & {cpu_matmul.GEMV_PART, cpu_matmul.GEMM_PART}:
            kinds["vector"] += 1
        elif "dequantize" in names and "matmul" in names:
            kinds["generic"] += 1
    # distinct kernels (layers of one shape share them): qkv, o, gate/up and down x (decode,
    # prefill), plus the head (one token);
    # in the K-quant case q/k/v stay float (Q4_K with Q6_K do not join) and the int4_g16 o
    # projection (Q3_K) stays generic: four int4 words hold 32 values, not whole groups of 16
    assert kinds == ({"vector": 9, "generic": 0} if case == "legacy" else {"vector": 5, "generic": 2})
