"""Embedding models (BERT encoders with sentence-transformers pooling), built by `webbuild build`.

CPU builds against transformers' BertModel + the folder's pooling (float32): a tiny random BERT with
each pooling mode, and the real all-MiniLM-L6-v2 on 100 varied sentences in padded batches; the
quantized builds' cosine similarity is measured and reported; bad pooling files are typed errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedding_support import (
    cosine,
    minilm_folder,
    reference_embeddings,
    save_tiny_bert,
    sentences,
    token_ids,
)
from webbuild.build import BuildRequest, build
from webbuild.chat_config import validate_chat_config
from webbuild.encoder_runner import CpuEncoder
from webbuild.errors import ConfigError

TINY_TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """pooling, normalize -> a saved tiny random BERT folder (one per combination)."""
    root = tmp_path_factory.mktemp("tiny-bert")
    made: dict = {}

    def get(pooling: str = "mean", normalize: bool = True):
        key = (pooling, normalize)
        if key not in made:
            made[key] = save_tiny_bert(root / f"{pooling}-{int(normalize)}", pooling, normalize)
        return made[key]

    return get


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", False), ("lasttoken", True)])
def test_tiny_bert_q0f32_matches_transformers(tiny_bert, cpu_build, pooling, normalize):
    folder = tiny_bert(pooling, normalize)
    built = cpu_build(folder, "q0f32")
    config = validate_chat_config(json.loads((built / "chat-config.json").read_text()))
    assert config["model_kind"] == "embedding"
    assert config["embedding"] == {"function": "encode", "dimensions": 64, "pooling": pooling,
                                   "normalize": normalize, "max_seq_length": 96}
    texts = sentences(12)
    batch = token_ids(folder, texts, 96)
    assert len({len(ids) for ids in batch}) > 3  # the batch really is padded
    ours = CpuEncoder(built).encode(batch)
    ref = reference_embeddings(folder, batch, pooling, normalize)
    assert ours.shape == ref.shape == (12, 64)
    assert np.abs(ref).max() > 0.05
    np.testing.assert_allclose(ours, ref, atol=TINY_TOL, rtol=0)
    # one input alone gives the same vector as inside a padded batch
    np.testing.assert_allclose(CpuEncoder(built).encode(batch[:1])[0], ours[0], atol=TINY_TOL, rtol=0)


def test_tiny_bert_q4f32_tracks_float(tiny_bert, cpu_build):
    folder = tiny_bert()
    batch = token_ids(folder, sentences(12), 96)
    f32 = CpuEncoder(cpu_build(folder, "q0f32")).encode(batch)
    q4 = CpuEncoder(cpu_build(folder, "q4f32_1")).encode(batch)
    sim = cosine(q4, f32)
    print(f"\ntiny bert q4f32_1 vs q0f32 cosine: min {sim.min():.5f} mean {sim.mean():.5f}")
    assert np.abs(q4 - f32).max() > 1e-4  # really quantized
    assert sim.min() > 0.9


@pytest.mark.parametrize("bad", ["max_pooling", "dense_module"])
def test_unsupported_sentence_transformers_files_are_config_errors(tiny_bert, tmp_path, bad):
    import shutil

    folder = shutil.copytree(tiny_bert(), tmp_path / "src")
    if bad == "max_pooling":
        config = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    else:
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules))
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        build(BuildRequest(str(folder), "q0f32", out, target="cpu"))
    assert not out.exists() or not any(out.iterdir())


def test_minilm_q0f32_matches_transformers(cpu_build):
    folder = minilm_folder()
    built = cpu_build(folder, "q0f32")
    batch = token_ids(folder, sentences(), 256)
    model = CpuEncoder(built)
    ours = np.concatenate([model.encode(batch[i:i + 16]) for i in range(0, len(batch), 16)])
    ref = np.concatenate([reference_embeddings(folder, batch[i:i + 16], "mean", True)
                          for i in range(0, len(batch), 16)])
    sim = cosine(ours, ref)
    print(f"\nall-MiniLM-L6-v2 q0f32 (CPU) vs transformers: min cosine {sim.min():.7f}, "
          f"max |diff| {np.abs(ours - ref).max():.2e}")
    assert sim.min() >= 0.9999
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantization", ["q4f32_1", "q4f32_min"])
def test_minilm_quantized_similarity_reported(cpu_build, quantization, record_property):
    folder = minilm_folder()
    batch = token_ids(folder, sentences(), 256)
    ours = np.concatenate([CpuEncoder(cpu_build(folder, quantization)).encode(batch[i:i + 25])
                           for i in range(0, len(batch), 25)])
    ref = np.concatenate([reference_embeddings(folder, batch[i:i + 25], "mean", True)
                          for i in range(0, len(batch), 25)])
    sim = cosine(ours, ref)
    record_property(f"{quantization}_min_cosine", float(sim.min()))
    record_property(f"{quantization}_mean_cosine", float(sim.mean()))
    print(f"\nall-MiniLM-L6-v2 {quantization} (CPU) vs transformers over {len(sim)} sentences: "
          f"min cosine {sim.min():.5f}, mean {sim.mean():.5f}")
    assert sim.min() > 0.8  # still the same embedding space; the numbers themselves are the report


# ----------------------------------------------------------------------------- in the browser
# The bundle's engine.embeddings.create in headless chromium on the WASM CPU module and on WebGPU
# (SwiftShader; attention in webbuild.kernels.encoder_attention), against transformers + the pooling
# config on the CPU.

EMBED_JS = """async ([url, options, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const out = [];
    for (const request of requests) {
      try { out.push(await engine.embeddings.create(request)); }
      catch (err) { out.push({error: err.code ?? String(err)}); }
    }
    let chat = null;
    try { await engine.chat.completions.create({messages: [{role: 'user', content: 'hi'}], max_tokens: 1}); }
    catch (err) { chat = err.code ?? String(err); }
    return {out, chat, backend: engine.backend, kind: engine.config.model_kind};
  } finally { await engine.unload(); }
}"""

QUANTIZED = ("q4f32_1", "q4f32_min")


@pytest.fixture(scope="module")
def embed_served(model_build, tmp_path_factory):
    """A models folder: all-MiniLM-L6-v2 in q0f32 and the quantized schemes, and a tiny chat model."""
    import os
    import shutil

    from tiny_models import save_tiny_llama

    root = tmp_path_factory.mktemp("served_embeddings")
    minilm = minilm_folder()
    for quantization in ("q0f32", *QUANTIZED):
        shutil.copytree(model_build(minilm, quantization, "webgpu"), root / f"minilm-{quantization}",
                        copy_function=os.link)
    chat_source = tmp_path_factory.mktemp("tiny_chat")
    save_tiny_llama(chat_source)
    shutil.copytree(model_build(chat_source, "q0f32", "webgpu"), root / "tiny-chat", copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def embed_server(embed_served):
    import subprocess

    from browser_support import REPO, webbuild_server

    if not (REPO / "dist" / "webbuild.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(embed_served) as url:
        yield url


@pytest.fixture(scope="module")
def embed_page(browser, embed_server):
    from browser_support import page_at

    with page_at(browser, embed_server) as pg:
        yield pg


@pytest.fixture(scope="module")
def minilm_reference():
    """(texts, their model inputs, transformers' embeddings) for the 100 sentences."""
    folder = minilm_folder()
    texts = sentences()
    batch = token_ids(folder, texts, 256)
    ref = np.concatenate([reference_embeddings(folder, batch[i:i + 25], "mean", True)
                          for i in range(0, len(batch), 25)])
    return texts, batch, ref


def _embed(page, server, model: str, requests: list[dict], **options) -> dict:
    return page.evaluate(EMBED_JS, [f"{server}models/{model}/", options, requests])


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_minilm_q0f32_in_chromium_matches_transformers(backend, embed_page, embed_server, minilm_reference):
    texts, batch, ref = minilm_reference
    result = _embed(embed_page, embed_server, "minilm-q0f32", [{"input": texts}], backend=backend)
    assert result["backend"] == backend and result["kind"] == "embedding"
    response = result["out"][0]
    assert response["object"] == "list" and response["model"]
    assert [d["index"] for d in response["data"]] == list(range(len(texts)))
    ours = np.array([d["embedding"] for d in response["data"]], dtype=np.float32)
    assert response["usage"] == {"prompt_tokens": sum(map(len, batch)), "total_tokens": sum(map(len, batch))}
    sim = cosine(ours, ref)
    print(f"\nall-MiniLM-L6-v2 q0f32 on {backend} vs transformers over {len(sim)} sentences: "
          f"min cosine {sim.min():.7f}, mean {sim.mean():.7f}, max |diff| {np.abs(ours - ref).max():.2e}")
    assert sim.min() >= 0.9999
    assert result["chat"] == "model-kind-mismatch"


@pytest.mark.parametrize("quantization", QUANTIZED)
def test_minilm_quantized_in_chromium_similarity_reported(quantization, embed_page, embed_server, minilm_reference,
                                                          record_property):
    texts, _, ref = minilm_reference
    result = _embed(embed_page, embed_server, f"minilm-{quantization}", [{"input": texts}], backend="wasm")
    ours = np.array([d["embedding"] for d in result["out"][0]["data"]], dtype=np.float32)
    sim = cosine(ours, ref)
    record_property(f"{quantization}_wasm_min_cosine", float(sim.min()))
    record_property(f"{quantization}_wasm_mean_cosine", float(sim.mean()))
    print(f"\nall-MiniLM-L6-v2 {quantization} on wasm vs transformers over {len(texts)} sentences: "
          f"min cosine {sim.min():.5f}, mean {sim.mean():.5f}")
    assert sim.min() > 0.8


def test_request_forms_and_errors_in_a_worker(embed_page, embed_server, minilm_reference):
    texts, batch, ref = minilm_reference
    requests = [
        {"input": texts[20], "encoding_format": "base64"},
        {"input": batch[:3]},  # token ids as the model's input
        {"input": texts[:2], "dimensions": 64},
        {"input": texts[:1], "dimensions": 1000},
        {"input": [list(range(1, 300))]},
    ]
    result = _embed(embed_page, embed_server, "minilm-q0f32", requests, worker=True, backend="wasm")
    b64, ids, short, too_wide, too_long = result["out"]
    vector = np.frombuffer(__import__("base64").b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert cosine(vector[None], ref[20:21])[0] >= 0.9999
    assert cosine(np.array([d["embedding"] for d in ids["data"]]), ref[:3]).min() >= 0.9999
    cut = np.array([d["embedding"] for d in short["data"]])
    assert cut.shape == (2, 64)
    expected = ref[:2, :64] / np.linalg.norm(ref[:2, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)
    assert too_wide == {"error": "invalid-request"}
    assert too_long == {"error": "context-window-exceeded"}
    assert result["chat"] == "model-kind-mismatch"


def test_embeddings_on_a_chat_model_are_a_model_kind_error(embed_page, embed_server):
    result = _embed(embed_page, embed_server, "tiny-chat", [{"input": "hello"}], backend="wasm")
    assert result["kind"] == "chat"
    assert result["out"] == [{"error": "model-kind-mismatch"}]
    assert result["chat"] is None  # the chat model still answers chat requests


def test_search_demo_ranks_like_transformers(browser, embed_server):
    """site/search.html, as a person uses it: texts, a query, Search; the ranked list and its scores
    match the cosines of transformers' embeddings."""
    from browser_support import page_at

    folder = minilm_folder()
    texts = ["The cat slept on the warm windowsill all afternoon.", "How do I reset my password?",
             "This recipe needs three eggs and a cup of flour.", "The stock market fell sharply today."]
    query = "I forgot my login credentials"
    ref = reference_embeddings(folder, token_ids(folder, texts + [query], 256), "mean", True)
    expected = cosine(ref[:4], np.repeat(ref[4:], 4, axis=0))
    with page_at(browser, f"{embed_server}search.html?model=minilm-q0f32") as page:
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert page.input_value("#model").endswith("/models/minilm-q0f32/")
        # the served chat model (tiny-chat) is not offered: /api/models says each folder's model_kind
        offered = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        assert offered and all("/models/minilm-" in url for url in offered), offered
        page.fill("#texts", "\n".join(texts) + "\n\n")
        page.fill("#query", query)
        page.click("#search")
        page.wait_for_function("document.body.dataset.state === 'error' || (document.body.dataset.state === 'ready'"
                               " && document.querySelectorAll('#results li').length > 0)", timeout=300_000)
        assert page.evaluate("document.querySelector('#error').dataset.code") is None
        assert page.evaluate("document.body.dataset.state") == "ready"
        rows = page.eval_on_selector_all("#results li", "lis => lis.map(li => [Number(li.dataset.index),"
                                         " Number(li.dataset.score), li.querySelector('.score').textContent,"
                                         " li.querySelector('.text').textContent])")
    assert [r[0] for r in rows] == list(np.argsort(-expected))
    assert [r[3] for r in rows] == [texts[i] for i in np.argsort(-expected)]
    np.testing.assert_allclose([r[1] for r in rows], np.sort(expected)[::-1], atol=1e-4)
    assert [r[2] for r in rows] == [f"{s:.4f}" for s in (r[1] for r in rows)]
