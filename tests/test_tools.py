"""OpenAI function calling (`tools`) in headless chromium: the tool list goes into the model's own
chat template, the output is decoded under the calls' grammar and parsed into `tool_calls`. Two
models, both given a Qwen2-style chat template with tools (Hermes `<tool_call>` syntax, written for
these tests) in their chat-config: a tiny random Llama on SmolLM2's vocabulary (its free output is
noise, so only the grammar can make its calls valid) and the real SmolLM2. Every call, streamed or
not, must name a tool and carry arguments (a JSON string) that validate with Python `jsonschema`
against that tool's schema; tool_choice "required" / named / "none" and parallel_tool_calls false
are checked, and a round trip through a `tool` message continues the conversation on the KV cache
(usage.prompt_tokens_details.cached_tokens covers the whole first prompt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest

from browser_support import REPO, page_at, webbuild_server
from tiny_models import save_tiny_llama

MODEL = "smollm2-135m-instruct"

# A Qwen2-style ChatML template with tools (Hermes syntax), written for these tests.
TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "You can call functions. Their signatures are inside <tools></tools>:\n<tools>"
    "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n"
    "To call a function, reply with a JSON object of its name and arguments inside <tool_call></tool_call> tags:\n"
    "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
    "{%- elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}\n<|im_start|>assistant\n"
    "{% if m.content %}{{ m.content }}{% endif %}"
    "{% for c in m.tool_calls %}{% if not loop.first %}\n{% endif %}<tool_call>\n"
    "{\"name\": \"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}<|im_end|>"
    "{%- elif m.role == 'tool' %}\n<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>"
    "{%- elif m.role != 'system' or loop.index0 > 0 %}\n<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
    "{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A Mistral-style template with tools (written for these tests): calls as [TOOL_CALLS][{...}, ...].
MISTRAL_TEMPLATE = (
    "{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
    "{%- elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}<|im_end|>"
    "{%- else %}{{ m.content }}<|im_end|>{%- endif %}{%- endfor %}"
)
#: SmolLM2's special token 5 (<file_sep>) renamed: a vocabulary where [TOOL_CALLS] is one special token, as in Mistral's
TOOL_CALLS_ID = 5

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
ADD: dict[str, Any] = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
        "required": ["a", "b"], "additionalProperties": False}}}
ALARM: dict[str, Any] = {"type": "function", "function": {
    "name": "set_alarm", "description": "Set an alarm",
    "parameters": {"type": "object", "properties": {
        "time": {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23},
                                                   "minute": {"type": "integer", "minimum": 0, "maximum": 59}},
                 "required": ["hour", "minute"], "additionalProperties": False},
        "days": {"type": "array", "items": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                 "minItems": 1, "maxItems": 3},
        "label": {"type": "string", "maxLength": 12}},
        "required": ["time", "days"], "additionalProperties": False}}}
TOOLS: list[dict[str, Any]] = [WEATHER, ADD, ALARM]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tools."}]

# Runs the requests in order on one engine; a streamed request's chunks are kept and folded into
# the same {content, tool_calls, finish} shape as a whole response.
REQUESTS_JS = """async ([url, options, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const out = [];
    for (const request of requests) {
      const r = await engine.chat.completions.create(request);
      if (!request.stream) {
        const c = r.choices[0];
        out.push({content: c.message.content, tool_calls: c.message.tool_calls ?? null, finish: c.finish_reason,
                  usage: r.usage});
        continue;
      }
      const chunks = [];
      for await (const chunk of r) chunks.push(chunk);
      const calls = [];
      let content = '', finish = null;
      for (const chunk of chunks) for (const c of chunk.choices) {
        content += c.delta.content ?? '';
        for (const d of c.delta.tool_calls ?? []) {
          calls[d.index] ??= {id: '', type: 'function', function: {name: '', arguments: ''}};
          if (d.id) calls[d.index].id = d.id;
          calls[d.index].function.name += d.function?.name ?? '';
          calls[d.index].function.arguments += d.function?.arguments ?? '';
        }
        if (c.finish_reason) finish = c.finish_reason;
      }
      const deltas = chunks.flatMap((ch) => ch.choices.flatMap((c) => c.delta.tool_calls ?? []));
      out.push({content: content || null, tool_calls: calls.length ? calls : null, finish, deltas});
    }
    return {out, backend: engine.backend};
  } finally { await engine.unload(); }
}"""


@pytest.fixture(scope="module")
def served(model_build, tmp_path_factory):
    """A models folder: SmolLM2 (source) and a tiny random Llama on its vocabulary, both with TOOLS_TEMPLATE."""
    root = tmp_path_factory.mktemp("served_tools")
    smollm = model_build(MODEL, "source", "webgpu")
    source = tmp_path_factory.mktemp("tiny_tools")
    save_tiny_llama(source, vocab_size=49152, max_position_embeddings=1024)
    shutil.copy(smollm / "tokenizer.json", source / "tokenizer.json")
    (source / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": TOOLS_TEMPLATE}))
    tiny = model_build(source, "q0f32", "webgpu")
    mistral_source = tmp_path_factory.mktemp("tiny_mistral")
    save_tiny_llama(mistral_source, vocab_size=49152, max_position_embeddings=1024)
    tokenizer = json.loads((smollm / "tokenizer.json").read_text())
    (added,) = [t for t in tokenizer["added_tokens"] if t["id"] == TOOL_CALLS_ID]
    del tokenizer["model"]["vocab"][added["content"]]
    added["content"] = "[TOOL_CALLS]"
    tokenizer["model"]["vocab"]["[TOOL_CALLS]"] = TOOL_CALLS_ID
    (mistral_source / "tokenizer.json").write_text(json.dumps(tokenizer))
    (mistral_source / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": MISTRAL_TEMPLATE}))
    mistral = model_build(mistral_source, "q0f32", "webgpu")
    for name, folder, template in (("smollm2-tools", smollm, TOOLS_TEMPLATE), ("tiny-tools", tiny, TOOLS_TEMPLATE),
                                   ("tiny-mistral", mistral, MISTRAL_TEMPLATE)):
        shutil.copytree(folder, root / name, copy_function=os.link)
        config_path = root / name / "chat-config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = template
        config_path.unlink()  # a hard link to the build's file: write a new one
        config_path.write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(served):
    if not (REPO / "dist" / "xgrammar.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(served) as url:
        yield url


@pytest.fixture(scope="module")
def page(browser, server):
    with page_at(browser, server) as pg:
        yield pg


def _run(page, server, model: str, backend: str, requests: list[dict], worker: bool = False) -> list[dict]:
    result = page.evaluate(REQUESTS_JS, [f"{server}models/{model}/", {"backend": backend, "worker": worker}, requests])
    assert result["backend"] == backend
    return result["out"]


def _calls(out: dict, allowed: set[str] | None = None) -> list[tuple[str, dict]]:
    """The reply's calls as (name, arguments), each checked: an id, a tool's name, arguments that
    are a JSON string and validate against that tool's schema."""
    calls = []
    for call in out["tool_calls"] or []:
        assert call["type"] == "function" and call["id"].startswith("call_")
        name = call["function"]["name"]
        assert name in (allowed or SCHEMAS), name
        args = json.loads(call["function"]["arguments"])
        jsonschema.validate(args, SCHEMAS[name], cls=jsonschema.Draft202012Validator)
        calls.append((name, args))
    if calls:
        assert out["finish"] == "tool_calls", out
    if "deltas" in out:  # streamed: per call, a first delta with id, type and name, then arguments only
        seen: set[int] = set()
        for d in out["deltas"]:
            if d["index"] not in seen:
                assert d["id"] and d["type"] == "function" and d["function"]["name"]
                assert d["function"]["arguments"] == ""
                seen.add(d["index"])
            else:
                assert "id" not in d and set(d["function"]) == {"arguments"}
        assert len(seen) == len(calls)
    return calls


def _request(**fields) -> dict:
    return {"messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 160, **fields}


def _named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def _choice_requests() -> list[dict]:
    """required, each tool by name (one call), streamed and not, and "none"."""
    requests = [_request(tool_choice="required", parallel_tool_calls=False),
                _request(tool_choice="required", parallel_tool_calls=False, stream=True)]
    for tool in TOOLS:
        name = tool["function"]["name"]
        requests += [_request(tool_choice=_named(name), parallel_tool_calls=False),
                     _request(tool_choice=_named(name), parallel_tool_calls=False, stream=True)]
    return requests + [_request(tool_choice="none", max_tokens=24), _request(max_tokens=96)]


def _check_choices(outputs: list[dict]) -> None:
    required, required_streamed = outputs[:2]
    for out in (required, required_streamed):
        assert len(_calls(out)) == 1
    assert _calls(required) == _calls(required_streamed), "greedy: streamed and whole replies agree"
    for i, tool in enumerate(TOOLS):
        whole, streamed = outputs[2 + 2 * i], outputs[3 + 2 * i]
        name = tool["function"]["name"]
        assert [n for n, _ in _calls(whole, {name})] == [name]
        assert _calls(whole) == _calls(streamed)
    none, auto = outputs[-2:]
    assert none["tool_calls"] is None and none["finish"] in ("stop", "length") and none["content"]
    _calls(auto)  # auto: free text or calls, each valid


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_tiny_random_model_calls_tools_only_through_the_grammar(backend, page, server):
    outputs = _run(page, server, "tiny-tools", backend, _choice_requests() + [
        _request(tool_choice="required", max_tokens=400)])
    _check_choices(outputs[:-1])
    parallel = outputs[-1]
    # parallel calls allowed: every complete call is valid (a random model may run out of tokens in the next)
    assert parallel["finish"] in ("tool_calls", "length")
    if parallel["finish"] == "tool_calls":
        assert _calls(parallel)


def test_mistral_calls_open_with_its_special_token(page, server):
    """[TOOL_CALLS] is a special token of this vocabulary: the grammar allows it (and no other special
    token) and the parser reads the call it opens. With tool_choice "auto" and the token favoured by
    logit_bias, as a model that decides to call writes it, the reply is a call; "required" with
    parallel calls off: exactly one valid call, streamed and not, all calls in one [TOOL_CALLS] list."""
    favour = {str(TOOL_CALLS_ID): 100.0}
    outputs = _run(page, server, "tiny-mistral", "wasm", [
        _request(logit_bias=favour), _request(logit_bias=favour, stream=True),
        _request(tool_choice="required", parallel_tool_calls=False),
        _request(tool_choice="required", parallel_tool_calls=False, stream=True),
        _request(tool_choice="required", max_tokens=400)])
    auto, auto_streamed, required, required_streamed, parallel = outputs
    assert auto["finish"] == "tool_calls" and _calls(auto), auto
    assert _calls(auto) == _calls(auto_streamed)
    assert len(_calls(required)) == 1 and _calls(required) == _calls(required_streamed)
    assert parallel["finish"] in ("tool_calls", "length")
    if parallel["finish"] == "tool_calls":
        assert _calls(parallel)


def test_tool_calls_in_worker_mode(page, server):
    """The engine in a Web Worker takes the tool fields and messages and sends back the same calls."""
    requests = [_request(tool_choice="required", parallel_tool_calls=False),
                _request(tool_choice=_named("set_alarm"), parallel_tool_calls=False, stream=True)]
    in_worker = _run(page, server, "tiny-tools", "wasm", requests, worker=True)
    in_page = _run(page, server, "tiny-tools", "wasm", requests)
    assert [_calls(o) for o in in_worker] == [_calls(o) for o in in_page]
    assert len(_calls(in_worker[0])) == 1 and _calls(in_worker[1])[0][0] == "set_alarm"


def test_smollm2_calls_tools_streaming_and_not(page, server):
    _check_choices(_run(page, server, "smollm2-tools", "wasm", _choice_requests()))


ROUND_TRIP_JS = """async ([url, tools]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, {backend: 'wasm'});
  try {
    const messages = [{role: 'user', content: 'What is the weather in Paris?'}];
    const first = await engine.chat.completions.create({messages, tools, temperature: 0, max_tokens: 80,
      tool_choice: {type: 'function', function: {name: 'get_weather'}}, parallel_tool_calls: false});
    const call = first.choices[0].message.tool_calls[0];
    messages.push(first.choices[0].message,
                  {role: 'tool', tool_call_id: call.id, content: JSON.stringify({temperature: 18, sky: 'sunny'})});
    const second = await engine.chat.completions.create({messages, tools, temperature: 0, max_tokens: 24});
    return {first: {message: first.choices[0].message, finish: first.choices[0].finish_reason, usage: first.usage},
            second: {message: second.choices[0].message, finish: second.choices[0].finish_reason, usage: second.usage}};
  } finally { await engine.unload(); }
}"""


def test_smollm2_round_trip_through_a_tool_message_reuses_the_kv_cache(page, server):
    r = page.evaluate(ROUND_TRIP_JS, [f"{server}models/smollm2-tools/", TOOLS])
    first, second = r["first"], r["second"]
    assert first["finish"] == "tool_calls" and first["message"]["content"] is None
    (name, args), = _calls({"tool_calls": first["message"]["tool_calls"], "finish": first["finish"]})
    assert name == "get_weather"
    assert second["finish"] in ("stop", "length", "tool_calls")
    assert second["message"]["content"] or second["message"].get("tool_calls")
    # the second prompt starts with the first one (and its reply): none of it is prefilled again
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"]


def test_tools_need_a_template_that_takes_them(page, server):
    """The model's template (chat-config) replaced by the request's: without tools support the
    request fails with tools-unsupported; an invalid tool_choice is an invalid request."""
    result = page.evaluate("""async ([url]) => {
      const wb = await import('/dist/webbuild.js');
      const engine = await wb.createEngine(url, {backend: 'wasm'});
      const tools = [{type: 'function', function: {name: 'f', parameters: {type: 'object'}}}];
      const codes = [];
      for (const extra of [{tool_choice: {type: 'function', function: {name: 'g'}}}, {tool_choice: 'always'}]) {
        try {
          await engine.chat.completions.create({messages: [{role: 'user', content: 'hi'}], tools, ...extra});
          codes.push(null);
        } catch (err) { codes.push([err.code, err.details?.field]); }
      }
      await engine.unload();
      return codes;
    }""", [f"{server}models/tiny-tools/"])
    assert result == [["invalid-request", "tool_choice.function.name"], ["invalid-request", "tool_choice"]]


def test_a_template_without_tools_is_a_typed_error(model_build, browser, tmp_path_factory):
    """SmolLM2's own ChatML template never reads `tools`: a request with tools fails with code
    tools-unsupported (reason no-tools-variable), and the engine still answers without them."""
    root = tmp_path_factory.mktemp("served_plain")
    shutil.copytree(model_build(MODEL, "source", "webgpu"), root / "plain", copy_function=os.link)
    with webbuild_server(root) as url, page_at(browser, url) as pg:
        result = pg.evaluate("""async ([url]) => {
          const wb = await import('/dist/webbuild.js');
          const engine = await wb.createEngine(url, {backend: 'wasm'});
          const tools = [{type: 'function', function: {name: 'f', parameters: {type: 'object'}}}];
          let error = null;
          try {
            await engine.chat.completions.create({messages: [{role: 'user', content: 'hi'}], tools});
          } catch (err) { error = [err.code, err.details?.reason, err instanceof wb.ToolsUnsupportedError]; }
          const hi = [{role: 'user', content: 'hi'}];
          const after = await engine.chat.completions.create({messages: hi, max_tokens: 2});
          await engine.unload();
          return {error, after: after.usage.completion_tokens};
        }""", [f"{url}models/plain/"])
    assert result["error"] == ["tools-unsupported", "no-tools-variable", True]
    assert result["after"] == 2
