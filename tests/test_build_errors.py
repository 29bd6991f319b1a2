"""Bad input to `python -m webbuild build`: a typed WebbuildError naming the file or field and the
fix, a clean exit (no traceback), and nothing left in the output folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthetic_gguf import write_gguf
from webbuild import build as build_module
from webbuild.build import BuildRequest, build
from webbuild.errors import (
    CompileError,
    ConfigError,
    CorruptFileError,
    ShardError,
    SourceNotFoundError,
    UnknownArchitectureError,
    UnsupportedQuantizationError,
    UnsupportedTensorTypeError,
    WeightMappingError,
)
from webbuild.shard.writer import ShardWriter

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "webbuild", "build", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture()
def hf_copy(tiny_llama_dirs, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dirs["untied"][0], folder)
    return folder


def _assert_clean(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == [], f"left behind: {list(out.iterdir())}"


def _expect(error_type, source, tmp_path, quantization="q0f32", **kw):
    out = tmp_path / "out"
    with pytest.raises(error_type) as info:
        build(BuildRequest(str(source), quantization, out, target="cpu", **kw))
    assert info.value.fix, "every user error says how to fix it"
    _assert_clean(out)
    return info.value


def test_missing_source(tmp_path):
    err = _expect(SourceNotFoundError, tmp_path / "nope", tmp_path)
    assert "nope" in err.where


def test_missing_config(hf_copy, tmp_path):
    (hf_copy / "config.json").unlink()
    err = _expect(SourceNotFoundError, hf_copy, tmp_path)
    assert err.where.endswith("config.json")


def test_corrupt_config(hf_copy, tmp_path):
    (hf_copy / "config.json").write_text("{not json")
    err = _expect(CorruptFileError, hf_copy, tmp_path)
    assert err.where.endswith("config.json")


def test_truncated_weights(hf_copy, tmp_path):
    weights = hf_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _expect(CorruptFileError, hf_copy, tmp_path)


def test_unknown_architecture(hf_copy, tmp_path):
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg["model_type"] = "mamba9"
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    err = _expect(UnknownArchitectureError, hf_copy, tmp_path)
    assert "model_type" in err.where


def test_config_field_missing(hf_copy, tmp_path):
    cfg = json.loads((hf_copy / "config.json").read_text())
    del cfg["hidden_size"]
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    err = _expect(ConfigError, hf_copy, tmp_path)
    assert err.where.endswith("hidden_size")


def test_config_disagrees_with_weights(hf_copy, tmp_path):
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    err = _expect(WeightMappingError, hf_copy, tmp_path)
    assert "gate_proj" in err.where


def test_unused_source_tensors(hf_copy, tmp_path):
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg["num_hidden_layers"] = 1  # the checkpoint has 2 layers
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    err = _expect(WeightMappingError, hf_copy, tmp_path)
    assert "layers.1" in err.message


def test_unsupported_quantization(hf_copy, tmp_path):
    err = _expect(UnsupportedQuantizationError, hf_copy, tmp_path, quantization="q3f99")
    assert err.where == "--quantization"


def test_gguf_with_unhandled_tensor_type(tmp_path):
    path = tmp_path / "int.gguf"
    write_gguf(path, tensors={"blk.0.ffn_up.weight": np.zeros((16, 8), dtype=np.int32)})
    err = _expect(UnsupportedTensorTypeError, path, tmp_path)
    assert "blk.0.ffn_up.weight" in err.message


def test_shard_name_collision(tmp_path):
    (tmp_path / "params_shard_0.bin").write_bytes(b"old")
    with pytest.raises(ShardError):
        ShardWriter(tmp_path).add("w", np.zeros(4, np.float32))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    writer = ShardWriter(fresh)
    writer.add("w", np.zeros(4, np.float32))
    with pytest.raises(ShardError):
        writer.add("w", np.zeros(4, np.float32))


def test_failure_late_in_the_build_leaves_nothing(hf_copy, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyboardInterrupt  # like Ctrl-C while writing shards

    monkeypatch.setattr(build_module, "write_shards", explode)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(BuildRequest(str(hf_copy), "q0f32", out, target="cpu"))
    _assert_clean(out)


def test_cli_reports_user_errors_without_traceback(hf_copy, tmp_path):
    (hf_copy / "config.json").write_text("{not json")
    out = tmp_path / "out"
    result = _cli(str(hf_copy), "--quantization", "q0f32", "--target", "cpu", "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "config.json" in result.stderr and "fix:" in result.stderr
    _assert_clean(out)


def test_cli_build_prints_summary(tiny_llama_dirs, tmp_path):
    out = tmp_path / "out"
    result = _cli(str(tiny_llama_dirs["untied"][0]), "-q", "q4f32_1", "--target", "cpu", "--out", str(out),
                  "--name", "tiny")
    assert result.returncode == 0, result.stderr
    assert "bits per parameter" in result.stdout
    folder = out / "tiny-q4f32_1-cpu"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["chat-config.json", "model.so", "params_shard_0.bin", "tensor-cache.json", "tokenizer.json",
         "tokenizer_config.json"])
    assert [p.name for p in out.iterdir()] == [folder.name]  # no temp folders left


@pytest.mark.parametrize("options", [{"shard_bytes": 0}, {"shard_bytes": -1 << 20}, {"name": "../x"},
                                     {"name": "a/b"}, {"name": ".."}, {"name": ""}, {"context_window": 0},
                                     {"context_window": 10 ** 12}, {"prefill_chunk": 0}])
def test_options_are_checked_before_any_work(options, hf_copy, tmp_path):
    _expect(ConfigError, hf_copy, tmp_path, **options)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing written outside --out either


def test_out_naming_a_file(hf_copy, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("x")
    with pytest.raises(ConfigError):
        build(BuildRequest(str(hf_copy), "q0f32", out, target="cpu"))
    assert out.read_text() == "x"


def test_nan_in_generation_config_is_a_clear_error(hf_copy, tmp_path):
    gen = hf_copy / "generation_config.json"
    doc = json.loads(gen.read_text()) if gen.exists() else {}
    gen.write_text(json.dumps({**doc, "temperature": float("nan")}))
    _expect(ConfigError, hf_copy, tmp_path)


def test_sigterm_during_a_build_leaves_nothing(hf_copy, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "webbuild", "build", str(hf_copy), "--target", "cpu",
                             "--quantization", "q0f32", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and any(out.iterdir())):
        time.sleep(0.05)
    assert out.exists() and any(out.iterdir()), "the build never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    _assert_clean(out)


@pytest.mark.parametrize("field, value", [("tie_word_embeddings", "false"), ("attention_bias", "no"),
                                          ("rms_norm_eps", float("nan")), ("rms_norm_eps", float("inf")),
                                          ("num_hidden_layers", 2 ** 31), ("num_hidden_layers", 100_000),
                                          ("vocab_size", 2 ** 40)])
def test_config_values_that_would_build_a_wrong_or_endless_model(field, value, hf_copy, tmp_path):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, field: value}))
    error = _expect(ConfigError, hf_copy, tmp_path)
    assert field in (error.where or "")


def test_gguf_block_count_too_large_is_a_config_error(tmp_path):
    path = tmp_path / "huge.gguf"
    write_gguf(path, extra={"llama.block_count": 2 ** 31})
    _expect(ConfigError, path, tmp_path)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "yarn", "factor": 4.0}, {"rope_type": "dynamic", "factor": 2.0}, {"type": "su"},
    {"rope_type": "linear"}, {"rope_type": "linear", "factor": -2.0}, {"rope_type": "linear", "factor": "2"},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "llama3", "factor": float("nan"), "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
], ids=["yarn", "dynamic", "su", "linear-no-factor", "linear-negative", "linear-string", "llama3-missing-field",
        "llama3-high-below-low", "llama3-nan"])
def test_rope_scaling_tvm_cannot_compile_is_a_config_error(scaling, hf_copy, tmp_path):
    """Checked before TVM sees it (TVM's own failures say nothing of the field)."""
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "rope_scaling": scaling}))
    error = _expect(ConfigError, hf_copy, tmp_path)
    assert "rope_scaling" in (error.where or "")


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
], ids=["linear", "llama3"])
def test_rope_scalings_the_kernels_compile_pass_the_check(scaling):
    from webbuild.arch.transformer import check_rope_scaling

    assert check_rope_scaling(scaling) == scaling


def test_an_error_inside_tvm_is_a_compile_error(hf_copy, tmp_path, monkeypatch):
    """With the config check switched off, TVM itself fails on yarn scaling (its Python code
    reads fields yarn needs): a CompileError with TVM's message, and nothing left behind."""
    from webbuild.arch import llama

    monkeypatch.setattr(llama, "check_rope_scaling", lambda scaling: scaling)
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    error = _expect(CompileError, hf_copy, tmp_path)
    assert "original_max_position_embeddings" in error.message
    assert "Traceback" not in str(error) and "-->" not in str(error)


@pytest.mark.parametrize("file, field, value", [
    ("generation_config.json", "eos_token_id", "2"), ("generation_config.json", "eos_token_id", 1.5),
    ("generation_config.json", "eos_token_id", [2, -1]), ("generation_config.json", "bos_token_id", 10 ** 9),
    ("config.json", "eos_token_id", True), ("config.json", "bos_token_id", -1),
])
def test_special_ids_outside_the_vocabulary_are_config_errors_before_compiling(file, field, value, hf_copy, tmp_path,
                                                                                monkeypatch):
    path = hf_copy / file
    doc = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**doc, field: value}))
    monkeypatch.setattr(build_module, "lower", lambda *a, **k: pytest.fail("compiled before the check"))
    error = _expect(ConfigError, hf_copy, tmp_path)
    assert error.where == f"{file}: {field}"


@pytest.mark.parametrize("added", [[{"id": 0}], [{"content": "<s>", "id": "0"}], {"content": "x"}, [7]])
def test_malformed_added_tokens_are_a_corrupt_file(added, hf_copy, tmp_path):
    tokenizer = json.loads((hf_copy / "tokenizer.json").read_text())
    (hf_copy / "tokenizer.json").write_text(json.dumps({**tokenizer, "added_tokens": added}))
    _expect(CorruptFileError, hf_copy, tmp_path)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_deeply_nested_json_is_a_corrupt_file(name, hf_copy, tmp_path):
    (hf_copy / name).write_text("[" * 100_000 + "]" * 100_000)
    _expect(CorruptFileError, hf_copy, tmp_path)


def test_deeply_nested_safetensors_header_is_a_corrupt_file(hf_copy, tmp_path):
    header = b"[" * 100_000 + b"]" * 100_000
    for weights in hf_copy.glob("*.safetensors"):
        weights.write_bytes(len(header).to_bytes(8, "little") + header)
    _expect(CorruptFileError, hf_copy, tmp_path)


def test_a_chat_template_that_is_not_a_string_is_a_config_error(hf_copy, tmp_path):
    path = hf_copy / "tokenizer_config.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**doc, "chat_template": {"bad": 1}}))
    error = _expect(ConfigError, hf_copy, tmp_path)
    assert error.where.endswith("chat_template")


@pytest.mark.parametrize("fields", [{"intermediate_size": 2 ** 30},
                                    {"hidden_size": 2 ** 20, "intermediate_size": 2 ** 20},
                                    {"num_attention_heads": 2 ** 24, "num_key_value_heads": 2 ** 24},
                                    {"num_hidden_layers": 1000}],
                         ids=["weight-over-int32", "every-weight-huge", "heads", "model-larger-than-checkpoint"])
def test_sizes_that_do_not_fit_the_kernels_or_the_checkpoint_are_config_errors(fields, hf_copy, tmp_path, monkeypatch):
    """Caught before compiling (TVM died of std::bad_alloc on such configs)."""
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, **fields}))
    monkeypatch.setattr(build_module, "lower", lambda *a, **k: pytest.fail("compiled before the check"))
    monkeypatch.setattr(build_module, "check_coverage", lambda *a: None)  # the sizes, not the tensor names
    error = _expect(ConfigError, hf_copy, tmp_path)
    assert (error.where or "").startswith("config.json")
