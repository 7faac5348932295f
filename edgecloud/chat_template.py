"""Chat messages to a prompt, with the model's own chat template.

Contract: ``render(template, messages)`` renders the Jinja chat template a generative model
advertises in its metadata (``chat_template``, from its tokenizer config) the way Hugging Face
tokenizers do: ``messages`` (each ``{"role", "content"}``, content a string), ``add_generation_prompt``
true (the prompt ends where the assistant's answer starts), ``raise_exception`` available to the
template. The template runs in Jinja's sandbox (it came over the network from a backend) and
compiled templates are kept by source. A template that fails is ``InvalidArgument`` naming
``messages`` (templates raise on conversations they do not support, e.g. a misplaced system role).
"""

from __future__ import annotations

import functools

from edgecloud.errors import InvalidArgument

__all__ = ["render"]


def _raise(message: str):
    raise InvalidArgument(f"the model's chat template refused them: {message}", field="messages")


@functools.lru_cache(maxsize=16)
def _compiled(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # the gateway install's jinja2

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(template: str, messages: list[dict[str, str]]) -> str:
    from jinja2 import TemplateError

    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=True)
    except InvalidArgument:
        raise
    except TemplateError as exc:
        raise InvalidArgument(f"could not be rendered with the model's chat template: {exc}",
                              field="messages") from None
