"""Recorded facts about SmolLM2-135M-Instruct (see ../shared/TOOLCHAIN.md) and the chat-prompt helper."""

from __future__ import annotations

QUESTION = "What is the capital of France?"
PROMPT_LEN = 37
PROMPT_HEAD = [1, 9690, 198, 2683]
ANSWER_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 2]
ANSWER = "The capital of France is Paris.<|im_end|>"
# First-token log-probs on the f32 (dequantized GGUF) weights: "The" (504) leads "L" (60) by ~0.08.
FIRST_TOKEN_LOGPROBS = {504: -1.88, 60: -1.97}

# A 200+-token English text (written for these tests) for teacher-forced agreement measurements.
STORY = (
    "The old lighthouse stood at the edge of the cliff for more than a century, guiding fishing boats home "
    "through fog and storm. Its keeper, a quiet man named Thomas, climbed the spiral staircase every evening "
    "to light the lamp and wind the clockwork that turned the great lens. In the winter, when the wind howled "
    "across the rocks and the waves threw spray as high as the gallery, he would sit by the window with a cup "
    "of tea and a notebook, recording the weather, the passing ships, and the birds that sheltered under the "
    "eaves. Over the years the notebooks filled a whole shelf. When the lighthouse was finally automated, the "
    "coast guard offered to move the books to a museum in the city, but Thomas refused. He said that the "
    "records belonged to the place where they were written, and that anyone who wanted to read them should "
    "make the journey, climb the stairs, and look out at the same grey sea. Today visitors still come on summer "
    "afternoons. They sit where he sat, turn the brittle pages, and find, between notes about wind speed and "
    "tides, small drawings of gulls, a pressed flower, and the names of every boat that came safely home."
)


def chat_prompt(template: str, question: str = QUESTION) -> str:
    """Render a chat template the way transformers does (sandboxed Jinja, trim/lstrip blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[{"role": "user", "content": question}],
                                            add_generation_prompt=True)
