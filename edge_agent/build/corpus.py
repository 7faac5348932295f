"""A deterministic evaluation corpus for the quantization report and the sensitivity analysis.

Contract: ``evaluation_corpus()`` returns the same list of unique strings on every call and
every machine (no randomness, no I/O): very short inputs ("ok", "?", "hi"), punctuation,
numbers, code, several languages and scripts, everyday sentences across many domains, and long
passages near and over 128 tokens. ``calibration_corpus(n)`` is a fixed, spread-out subset of it
(every k-th sentence, so it covers all kinds), used where a full pass would be too slow.
``BENCH_SENTENCE`` and ``bench_batch()`` are the inputs of the batch-1 and batch-32 latency figures.
"""

from __future__ import annotations

SHORT = [
    "ok", "?", "hi", "no", "yes", "!", "...", "a", "x", "42", "thanks", "lol", "wow!", "hmm?",
    "ok.", "Hello", "bye", "#", "@home", ":)", "N/A", "3.14", "why?", "stop", "go",
]

PUNCTUATION_AND_NUMBERS = [
    "!!!???",
    "-- -- --",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "Call me at +1 (555) 010-2299 after 6 p.m.",
    "The invoice total is $1,249.99 (incl. 20% VAT).",
    "Version 2.13.0-rc1 was released on 2024-06-30.",
    "π ≈ 3.14159, e ≈ 2.71828, and √2 ≈ 1.41421.",
    "Temperature: -12.5°C / 9.5°F; humidity 87%.",
    "ERROR 404: page /api/v2/users?id=17 not found",
    "a = b + c * (d - e) / f ** 2",
    "https://example.com/docs/getting-started#install",
    "user@example.org, admin@test.net; root@localhost",
    "{\"key\": \"value\", \"n\": [1, 2, 3]}",
    "def add(x, y): return x + y",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "Flight BA 2490 departs gate B12 at 07:45.",
    "Order #A-77813 shipped via UPS 1Z999AA10123456784.",
    "***** five stars *****",
    "¯\\_(ツ)_/¯",
]

MULTILINGUAL = [
    "Bonjour, comment allez-vous aujourd'hui ?",
    "Le chat dort sur le canapé depuis ce matin.",
    "Wie spät ist es bitte?",
    "Der Zug nach München hat zwanzig Minuten Verspätung.",
    "¿Dónde está la estación de tren más cercana?",
    "Me gusta mucho la comida picante de México.",
    "Questo ristorante serve la migliore pizza della città.",
    "Eu adoro passar as férias na praia com a família.",
    "Ik fiets elke dag naar mijn werk in Amsterdam.",
    "Jag dricker kaffe varje morgon innan jobbet.",
    "Привет, как дела?",
    "Москва — столица России и крупнейший город страны.",
    "東京は日本の首都です。",
    "今日はとても暑いですね。",
    "我喜欢在周末看电影。",
    "北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "مرحبا، كيف حالك؟",
    "שלום, מה שלומך?",
    "नमस्ते, आप कैसे हैं?",
    "Γεια σου, τι κάνεις;",
    "Merhaba, nasılsın?",
    "Xin chào, bạn có khỏe không?",
    "สวัสดีครับ",
    "I love sushi 🍣 and ramen 🍜!",
    "Let's meet at the café on Rue de Rivoli, ok?",
]

EVERYDAY = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "The meeting has been moved to Thursday afternoon.",
    "Can you recommend a good book about history?",
    "It is raining heavily in London this morning.",
    "The stock market fell sharply after the announcement.",
    "She plays the violin in the city orchestra.",
    "Please turn off the lights when you leave.",
    "My flight was delayed by three hours.",
    "The doctor prescribed antibiotics for the infection.",
    "Our team won the championship last night.",
    "What is the capital of Australia?",
    "The recipe calls for two cups of flour and one egg.",
    "I forgot my umbrella at the office again.",
    "The new phone has a much better camera.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The library closes at eight on weekdays.",
    "He apologized for being late to the interview.",
    "The museum is free on the first Sunday of each month.",
    "Photosynthesis converts light energy into chemical energy.",
    "A cat is sitting on the windowsill.",
    "A dog is running through the park.",
    "A man is playing a guitar on stage.",
    "A woman is slicing tomatoes in the kitchen.",
    "Two children are building a sandcastle on the beach.",
    "The server returned an internal error after the deployment.",
    "Kubernetes restarts the pod when the liveness probe fails.",
    "The gradient vanishes when the network is too deep.",
    "Inflation reached its highest level in a decade.",
    "The patient reported chest pain and shortness of breath.",
    "The court ruled in favour of the defendant.",
    "Mix the batter gently and bake for twenty-five minutes.",
    "The hiking trail is closed because of snow.",
    "Electric cars are becoming cheaper every year.",
    "The concert was cancelled due to the storm.",
]

_SUBJECTS = [
    "The engineer", "My neighbour", "A young student", "The committee", "Our startup",
    "The old fisherman", "The nurse", "The chef", "A tourist", "The robot",
    "The city council", "The goalkeeper", "An astronomer", "The librarian", "The pilot",
]
_ACTIONS = [
    "fixed the broken server", "planted tomatoes in the garden", "wrote a long report about climate",
    "cooked pasta with fresh basil", "lost the keys to the car", "approved the new budget",
    "discovered a comet last winter", "trained a neural network overnight",
    "booked a trip to Lisbon", "cleaned the entire warehouse", "saved a penalty in the final",
    "answered every customer email", "painted the fence bright blue", "ran a marathon in Berlin",
    "repaired an antique clock",
]
_CONTEXTS = [
    "before sunrise", "despite the heavy rain", "for the first time", "without any help",
    "after a long discussion", "in less than an hour", "while everyone was asleep",
    "on a tight budget", "during the holidays", "to everyone's surprise",
]

_QUESTIONS = [
    "How much does a {} cost?", "Where can I buy a {}?", "Is a {} safe for children?",
    "What is the best way to clean a {}?", "Why does my {} make a strange noise?",
]
_THINGS = [
    "bicycle", "laptop", "coffee machine", "washing machine", "tent", "violin", "drone",
    "sofa", "microwave", "printer",
]

_LONG_TOPICS = [
    ("The history of the printing press",
     "began in the fifteenth century when Johannes Gutenberg combined movable metal type, "
     "oil-based ink and a wooden screw press, which made books far cheaper to produce, spread "
     "literacy across Europe, accelerated the Reformation and the scientific revolution, and "
     "changed how knowledge was stored, copied, corrected and shared between scholars"),
    ("A modern data center",
     "contains thousands of servers arranged in racks, cooled by chilled water or outside air, "
     "powered through redundant supplies and batteries, connected by high-bandwidth switches, "
     "and monitored around the clock by operators who track temperature, power draw, disk "
     "failures, network latency and the health of every service running inside it"),
    ("Training for a marathon",
     "usually takes sixteen to twenty weeks of gradually increasing mileage, with one long run "
     "every weekend, a few easy recovery runs, some interval or tempo sessions for speed, "
     "careful attention to sleep, hydration and nutrition, and a taper in the final weeks so "
     "the legs are fresh on race day"),
    ("The water cycle",
     "describes how water evaporates from oceans, lakes and plants, rises as vapour, cools and "
     "condenses into clouds, falls back as rain, snow or hail, flows through rivers and "
     "underground aquifers, and eventually returns to the sea, moving heat and nutrients around "
     "the planet along the way"),
    ("Our quarterly results",
     "show revenue up twelve percent year over year to 4.2 billion dollars, operating margin "
     "improving by one and a half points, strong growth in cloud subscriptions, a slight "
     "decline in hardware sales, higher spending on research, and guidance for the next "
     "quarter that is slightly above what analysts had expected"),
]

_LONG_SUFFIXES = [
    " Experts still debate which of these factors mattered most, and new research keeps "
        "adding details that earlier accounts missed or simplified.",
    " In short, it is a story of many small improvements adding up over time; none of them "
        "would have been enough alone, but together they transformed everyday life for millions "
        "of people, in ways that the original inventors, engineers and planners could hardly "
        "have imagined when they started, and that we still feel today in work, school and home.",
]


def _template_sentences() -> list[str]:
    sentences = []
    for i, subject in enumerate(_SUBJECTS):
        for j in range(4):
            action = _ACTIONS[(i * 3 + j * 5) % len(_ACTIONS)]
            context = _CONTEXTS[(i + j * 7) % len(_CONTEXTS)]
            sentences.append(f"{subject} {action} {context}.")
    for k, template in enumerate(_QUESTIONS):
        for m in range(4):
            sentences.append(template.format(_THINGS[(k * 3 + m * 2) % len(_THINGS)]))
    return sentences


def _long_passages() -> list[str]:
    passages = []
    for topic, body in _LONG_TOPICS:
        passages.append(f"{topic} {body}.")
        for suffix in _LONG_SUFFIXES:
            passages.append(f"{topic} {body}.{suffix}")
        passages.append(f"{topic} {body}.{''.join(_LONG_SUFFIXES)}")
    # Two topics back to back: around 130 tokens, just over BERT's usual 128 training length.
    for (t1, b1), (t2, b2) in zip(_LONG_TOPICS, _LONG_TOPICS[1:] + _LONG_TOPICS[:1]):
        passages.append(f"{t1} {b1}. {t2} {b2}.")
    # Over 256 tokens: exercises truncation at max_sequence_length.
    passages.append(" ".join(f"{t} {b}." for t, b in _LONG_TOPICS))
    return passages


def evaluation_corpus() -> list[str]:
    """At least 200 unique sentences, deterministic order, duplicates removed (first kept)."""
    groups = [SHORT, PUNCTUATION_AND_NUMBERS, MULTILINGUAL, EVERYDAY,
              _template_sentences(), _long_passages()]
    seen: dict[str, None] = {}
    for group in groups:
        for sentence in group:
            seen.setdefault(sentence, None)
    return list(seen)


def calibration_indices(n: int = 48) -> list[int]:
    """Indices of ``n`` sentences spread evenly over ``evaluation_corpus()`` (every k-th one)."""
    total = len(evaluation_corpus())
    if n >= total:
        return list(range(total))
    step = total / n
    return [int(i * step) for i in range(n)]


def calibration_corpus(n: int = 48) -> list[str]:
    """The sentences at ``calibration_indices(n)``: a small set that still covers every kind."""
    corpus = evaluation_corpus()
    return [corpus[i] for i in calibration_indices(n)]


BENCH_SENTENCE = "How do I reset my password on the new laptop?"
"""The batch-1 latency input: 13 tokens with [CLS] and [SEP], a typical short query."""


def bench_batch(n: int = 32) -> list[str]:
    """``n`` everyday sentences (8-16 tokens each), the batch-``n`` latency input."""
    return [EVERYDAY[i % len(EVERYDAY)] for i in range(n)]
