"""OpenAI request bodies: what is accepted, and every refusal names the parameter."""

from __future__ import annotations

import pytest

from edgecloud.errors import InvalidArgument
from gateway.openai_api.schema import parse_chat, parse_completion

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_chat_body_becomes_messages_and_sampling():
    request = parse_chat({**CHAT, "max_tokens": 5, "temperature": 0, "top_p": 0.9, "seed": 3, "stop": "\n",
                          "stream": True, "stream_options": {"include_usage": True}, "user": "u1",
                          "quality": "cloud"})
    assert request.messages == [{"role": "user", "content": "hi"}]
    assert request.sampling == {"max_tokens": 5, "temperature": 0, "top_p": 0.9, "seed": 3, "stop": "\n"}
    assert request.stream and request.include_usage and request.parameters == {"quality": "cloud"}


def test_max_completion_tokens_wins_and_text_parts_are_joined_and_developer_is_system():
    request = parse_chat({"model": "m", "max_tokens": 9, "max_completion_tokens": 4,
                          "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
                                                                         {"type": "text", "text": "b"}]}]})
    assert request.sampling["max_tokens"] == 4 and request.messages == [{"role": "system", "content": "ab"}]


def test_a_completion_body_takes_a_prompt_or_a_list_of_one():
    assert parse_completion({"model": "m", "prompt": "x"}).prompt == "x"
    assert parse_completion({"model": "m", "prompt": ["x"]}).prompt == "x"


@pytest.mark.parametrize("body, field", [
    ({"messages": CHAT["messages"]}, "model"),
    ({"model": 3, "messages": CHAT["messages"]}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
    ({**CHAT, "n": 2}, "n"),
    ({**CHAT, "presence_penalty": 0.5}, "presence_penalty"),
    ({**CHAT, "logprobs": True}, "logprobs"),
    ({**CHAT, "tools": []}, "tools"),
    ({**CHAT, "response_format": {"type": "json_object"}}, "response_format"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options"),
    ({**CHAT, "temprature": 0}, "temprature"),
])
def test_bad_chat_bodies_name_the_parameter(body, field):
    with pytest.raises(InvalidArgument) as caught:
        parse_chat(body)
    assert caught.value.field == field


@pytest.mark.parametrize("body, field", [
    ({"model": "m"}, "prompt"),
    ({"model": "m", "prompt": ""}, "prompt"),
    ({"model": "m", "prompt": ["a", "b"]}, "prompt"),
    ({"model": "m", "prompt": "x", "echo": True}, "echo"),
    ({"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": "m", "prompt": "x", "messages": []}, "messages"),
])
def test_bad_completion_bodies_name_the_parameter(body, field):
    with pytest.raises(InvalidArgument) as caught:
        parse_completion(body)
    assert caught.value.field == field


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidArgument) as caught:
        parse_chat(["model"])
    assert caught.value.field == "body"
