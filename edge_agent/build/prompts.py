"""The prompt set the generative model's quality report runs: 120 varied chat prompts (questions,
explanations, instructions, writing, arithmetic, code, advice, rewriting), fixed and in order so
reports compare across builds."""

from __future__ import annotations

_TOPICS = (
    "the moon", "photosynthesis", "the French Revolution", "black holes", "coffee", "volcanoes",
    "the internet", "honey bees", "the Roman Empire", "rainbows", "electric cars", "the ocean tides",
    "vaccines", "chess", "the human heart",
)
_FORMS = (
    "What is {}?",
    "Explain {} to a ten-year-old.",
    "Give me three facts about {}.",
    "Write a short poem about {}.",
    "Why is {} important?",
    "Summarize the history of {} in two sentences.",
    "What is a common misconception about {}?",
    "Write one sentence that uses the word '{}'.",
)
_STANDALONE = (
    "What is 17 plus 25?",
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Translate 'good morning' into Spanish.",
    "How do I boil an egg?",
    "List the days of the week.",
    "What is the opposite of 'ancient'?",
    "Suggest a name for a friendly robot.",
    "How many legs does a spider have?",
    "Rewrite this more politely: give me the report now.",
    "What should I pack for a weekend hiking trip?",
    "Tell me a joke about computers.",
)


def chat_prompts() -> list[str]:
    """The user messages of the report, 132 of them."""
    prompts = [form.format(topic) for topic in _TOPICS for form in _FORMS]
    return prompts + list(_STANDALONE)


BENCH_MESSAGES = ({"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Why is the sky blue? Why are sunsets red?"})
"""The chat timing rounds use: 29 tokens once rendered with SmolLM2's chat template."""
