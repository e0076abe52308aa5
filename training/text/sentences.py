"""Real, varied sentences for parity checks of text towers: short, long (past 256 tokens, so they
are truncated), non-ASCII, punctuation and numbers. Written for this project; no download."""

from __future__ import annotations

_BASE = [
    "Hi.",
    "ok",
    "The cat sat on the mat.",
    "A man is playing a guitar on a crowded street corner.",
    "Two dogs are running through a field of tall grass.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "What is the capital of Australia?",
    "Canberra is the capital of Australia, not Sydney.",
    "The meeting has been moved to Thursday at 3:30 pm.",
    "Please send the invoice (no. 2024-117) by Friday.",
    "Revenue grew 12.5% year over year to $4.2 billion.",
    "Call me at +1 (555) 010-9999 or email jane.doe@example.com.",
    "Is it 3.14159 or 22/7? Neither, exactly.",
    "Error 404: the page you requested could not be found.",
    "Wait... what?! You did WHAT?",
    'She said, "I\'ll be there by noon," and hung up.',
    "Semicolons; colons: dashes — and ellipses…",
    "The results (see Table 3) were not significant (p = 0.27).",
    "Add 2 cups of flour, 1 tsp of salt and 250 ml of warm water.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is often called the powerhouse of the cell.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "The stock market fell sharply after the announcement.",
    "Machine learning models can overfit small datasets.",
    "An embedding maps text to a point in a vector space.",
    "Nearest-neighbour search finds the closest vectors to a query.",
    "The train to Berlin leaves from platform 7.",
    "I love this phone, but the battery life is terrible.",
    "This is the worst customer service I have ever experienced.",
    "Absolutely fantastic meal — we will definitely come back!",
    "The hotel room was clean, quiet and reasonably priced.",
    "Can you recommend a good book about the history of mathematics?",
    "Rain is expected tomorrow with temperatures around 14 °C.",
    "Turn left at the second traffic light, then continue for 500 metres.",
    "The patient reported mild headaches and occasional dizziness.",
    "Take one tablet twice a day after meals.",
    "The court ruled in favour of the defendant.",
    "Parliament passed the bill by a narrow margin of 212 to 208.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "¿Dónde está la estación de tren más cercana?",
    "Ça coûte 15 € — c'est très cher pour un café !",
    "Mañana vamos a la playa con los niños.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Zażółć gęślą jaźń.",
    "Ηλέκτρα και Αντιγόνη είναι ονόματα από την αρχαία τραγωδία.",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "我喜欢在周末读书。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بكم في المكتبة.",
    "שלום עולם",
    "नमस्ते, आप कैसे हैं?",
    "Emoji test: 🚀🔥👍 works?",
    "naïve café coöperate résumé façade",
    "I'm gonna grab some food, brb.",
    "lol that was sooo funny 😂",
    "def add(a, b): return a + b",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "https://example.com/path?query=1&other=two#section",
    "C:\\Program Files\\App\\config.ini",
    "#hashtag @mention $TICKER",
    "The 2nd, 3rd and 4th items are out of stock.",
    "A B C D E F G",
    "one two three four five six seven eight nine ten",
    "    leading and trailing spaces    ",
    "multiple\nlines\nof text",
    "tabs\tbetween\twords",
    "UPPERCASE SENTENCE FOR EMPHASIS",
    "mIxEd CaSe TeXt",
    "The end.",
]

_PARAGRAPH = (
    "Self-supervised learning trains an encoder without labels by asking it to solve a task "
    "built from the data itself: predicting a masked word from its context, telling two views "
    "of the same image apart from views of other images, or matching an image with its caption. "
    "The representations learnt this way transfer to many downstream tasks, such as retrieval, "
    "clustering and few-shot classification, often with only a handful of labelled examples. "
)


def _long(i: int) -> str:
    """Texts of a few hundred to several hundred words: past 256 tokens, so the model truncates them."""
    return f"Document {i}. " + _PARAGRAPH * (3 + i % 5) + f"It ends with number {i * 37}."


def _pairs() -> list[str]:
    """Combinations of base sentences: two to four of them in one text."""
    out = []
    for i in range(0, 40, 2):
        out.append(" ".join(_BASE[i : i + 2 + i % 3]))
    return out


PARITY_SENTENCES: list[str] = [s for s in _BASE if s.strip()] + _pairs() + [_long(i) for i in range(12)]
