"""The browser runtime's tokenizer (runtime_js/src/tokenizer.ts, run under node) against Python `tokenizers`.

SmolLM2's tokenizer.json / chat template: the JS chat-template rendering (@huggingface/jinja) must
equal the Python jinja2 rendering, and the JS token ids must equal the Python ids, for the chat
prompt and for awkward strings; decoding (batch and streaming) must round-trip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from smollm_facts import PROMPT_HEAD, PROMPT_LEN, QUESTION, chat_prompt

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "dist" / "modules" / "tokenizer.js"

AWKWARD = [
    "héllo wörld ÄÖÜ ß, café naïve façade",
    "e\u0301 combining accent vs é precomposed",
    "emoji 🦙🚀 and ZWJ 👩‍👩‍👧 👨🏽‍💻 🏳️‍🌈 ok",
    "中文字符和日本語のテキスト、한국어",
    "def f(x):\n\tif x:\n\t\treturn [i ** 2 for i in range(x)]\n    # four-space indent\n",
    "digits 12345 and 3.14159, year 2024",
    "whitespace   runs\t\t  and    trailing   ",
    "windows\r\nline\r\nendings\r\n",
    "\n\n\nleading newlines",
    " ",
    "<|im_start|>user\nhi<|im_end|>\n",
    "special mid-text a<|im_end|>b<|endoftext|>c",
    "",
]

NODE_SCRIPT = r"""
import { readFileSync } from "node:fs";
import { Tokenizer } from "__MODULE__";
const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const tok = new Tokenizer(input.tokenizer, input.config, input.chat);
const chat = tok.encodeChat([{ role: "user", content: input.question }]);
const out = { prompt: chat.prompt, prompt_ids: chat.ids, prompt_decoded: tok.decode(chat.ids), cases: [] };
for (const text of input.texts) {
  const ids = tok.encode(text);
  const stream = tok.streamDecoder();
  const deltas = ids.map((id) => stream.push(id));
  deltas.push(stream.flush());
  out.cases.push({ ids, decoded: tok.decode(ids), decoded_skip: tok.decode(ids, { skipSpecial: true }), deltas });
}
out.python_ids_decoded = input.python_ids.map((ids) => tok.decode(ids));
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def py_tokenizer(smollm) -> Tokenizer:
    return Tokenizer.from_str(smollm.tokenizer_files["tokenizer.json"].decode("utf-8"))


def run_js_tokenizer(tmp: Path, payload: dict) -> dict:
    """Build the runtime's modules and run NODE_SCRIPT on `payload` (tokenizer, config, chat,
    question, texts, python_ids) in `tmp`; its JSON output."""
    node = shutil.which("node")
    assert node is not None, "node is not installed (make deps)"
    assert (ROOT / "node_modules" / "esbuild").is_dir(), "npm packages are not installed (make deps-js)"
    build = subprocess.run([node, str(ROOT / "runtime_js" / "build.mjs"), "--modules"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    (tmp / "input.json").write_text(json.dumps(payload))
    script = tmp / "run.mjs"
    script.write_text(NODE_SCRIPT.replace("__MODULE__", MODULE.as_uri()))
    run = subprocess.run([node, str(script), str(tmp / "input.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def js_result(smollm, py_tokenizer, tmp_path_factory):
    payload = {
        "tokenizer": json.loads(smollm.tokenizer_files["tokenizer.json"]),
        "config": json.loads(smollm.tokenizer_files.get("tokenizer_config.json", b"{}")),
        "chat": {"chat_template": smollm.chat_template, "bos_token_id": None, "add_bos_token": False},
        "question": QUESTION,
        "texts": AWKWARD,
        "python_ids": [py_tokenizer.encode(t).ids for t in AWKWARD],
    }
    return run_js_tokenizer(tmp_path_factory.mktemp("js_tokenizer"), payload)


def test_chat_prompt_matches_python(smollm, py_tokenizer, js_result):
    prompt = chat_prompt(smollm.chat_template)
    assert js_result["prompt"] == prompt
    ids = js_result["prompt_ids"]
    assert ids == py_tokenizer.encode(prompt).ids
    assert len(ids) == PROMPT_LEN
    assert ids[:4] == PROMPT_HEAD
    assert js_result["prompt_decoded"] == prompt


@pytest.mark.parametrize("index", range(len(AWKWARD)), ids=[repr(t)[:32] for t in AWKWARD])
def test_awkward_strings_match_python(py_tokenizer, js_result, index):
    text, case = AWKWARD[index], js_result["cases"][index]
    assert case["ids"] == py_tokenizer.encode(text).ids
    assert case["decoded"] == text == py_tokenizer.decode(case["ids"], skip_special_tokens=False)
    assert case["decoded_skip"] == py_tokenizer.decode(case["ids"], skip_special_tokens=True)
    assert js_result["python_ids_decoded"][index] == text
    assert "".join(case["deltas"]) == text
    assert all("\ufffd" not in d for d in case["deltas"])
