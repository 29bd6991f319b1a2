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
