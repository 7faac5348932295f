"""The gateway renders chat prompts exactly as the model's own tokenizer does (transformers'
``apply_chat_template`` on the built SmolLM2 directory is the reference)."""

from __future__ import annotations

import pytest

from edgecloud.errors import InvalidArgument
from edgecloud.generation import chat_template_of
from edgecloud.chat_template import render

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke about ünïcödé 🎉"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_rendering_matches_the_models_tokenizer(generative_model_dir, messages):
    from transformers import AutoTokenizer

    cloud_dir = generative_model_dir / "cloud"
    tokenizer = AutoTokenizer.from_pretrained(str(cloud_dir))
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render(chat_template_of(cloud_dir), messages) == expected


def test_the_edge_ships_the_same_template(generative_model_dir):
    assert chat_template_of(generative_model_dir / "edge-int4") == chat_template_of(generative_model_dir / "cloud")


def test_a_template_that_refuses_names_the_messages():
    template = "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok"
    assert render(template, [{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(InvalidArgument) as caught:
        render(template, [{"role": "assistant", "content": "x"}])
    assert caught.value.field == "messages" and "user first" in caught.value.message


def test_a_template_cannot_reach_outside_its_sandbox():
    with pytest.raises(InvalidArgument):
        render("{{ messages.__class__.__mro__[1].__subclasses__() }}", [{"role": "user", "content": "x"}])
