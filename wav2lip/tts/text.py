"""Text normalisation and sentence splitting: what any speech backend speaks.

Numbers, currency, times, common abbreviations and symbols become words; the text is
split into sentences (not after abbreviations, initials or inside decimals), and
sentences longer than ``MAX_SENTENCE_CHARS`` are cut at a comma or space.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import EmptyText

MAX_SENTENCE_CHARS = 400  #: longer sentences are cut at a comma/space (bounded model input)
NORMALIZER_VERSION = 1  #: bump when normalisation changes, so cache keys change

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", "")}
_SYMBOLS = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "%": " percent ",
            "°": " degrees ", "−": " minus "}
_KEEP_PUNCT = set(".,!?;:'\"()-…–—‘’“”«»¿¡")
_NO_BREAK = {"dr", "mr", "mrs", "ms", "st", "vs", "etc"}
_EMOJI_MARK = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"


def _int_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + _int_words(n % 100) if n % 100 else "")
    for size, word in _SCALES:
        if n >= size:
            rest = n % size
            return f"{_int_words(n // size)} {word}" + (" " + _int_words(rest) if rest else "")
    raise AssertionError(n)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _say(num: str) -> str:
    """Words for '1,234', '3.50', '007' (leading zeros and huge numbers: digit by digit)."""
    whole, _, frac = num.replace(",", "").partition(".")
    whole = whole or "0"
    said = _digits(whole) if (len(whole) > 1 and whole[0] == "0") or len(whole) > 15 else _int_words(int(whole))
    return said + (" point " + _digits(frac) if frac else "")


def _ordinal(n: str) -> str:
    words = _say(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    last = words[cut:]
    return words[:cut] + (_ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th"))


def _money(sym: str, num: str, scale: str | None) -> str:
    one, many, sub1, subn = _CURRENCY[sym]
    whole, _, frac = num.replace(",", "").partition(".")
    if scale or len(frac) > 2 or not sub1:
        return f"{_say(num)}{' ' + scale.lower() if scale else ''} {many}"
    major, minor = int(whole or 0), int(frac.ljust(2, "0")) if frac else 0
    parts = [f"{_int_words(major)} {one if major == 1 else many}"] if major or not minor else []
    if minor:
        parts.append(f"{_int_words(minor)} {sub1 if minor == 1 else subn}")
    return " and ".join(parts)


def _time(m: re.Match) -> str:
    h, mins = int(m.group(1)), int(m.group(2))
    tail = " o'clock" if mins == 0 else (" oh " + _ONES[mins] if mins < 10 else " " + _int_words(mins))
    return _int_words(h) + tail


_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\bDr\.(?=\s|[A-Z])"), "Doctor"),
    (re.compile(r"\bMr\.(?=\s|[A-Z])"), "Mister"),
    (re.compile(r"\bMrs\.(?=\s|[A-Z])"), "Missus"),
    (re.compile(r"\bMs\.(?=\s|[A-Z])"), "Miz"),
    (re.compile(r"\bSt\.(?= *[A-Z])"), "Saint"),
    (re.compile(r"\bSt\.(?=( *\n| *$)?)"), lambda m: "Street" + ("." if m.group(1) is not None else "")),
    (re.compile(r"\be\.g\.(?!\w)", re.I), "for example"),
    (re.compile(r"\bi\.e\.(?!\w)", re.I), "that is"),
    (re.compile(r"\b[Ee]tc\.(?=(\s+[A-Z]| *\n| *$)?)"),
     lambda m: "et cetera" + ("." if m.group(1) is not None else "")),
    (re.compile(r"\bvs\.?(?!\w)"), "versus"),
    (re.compile(r"\b(\d{1,2}):(\d{2})\b"), _time),
    (re.compile(rf"([$€£¥]) ?({_NUM})(?: ?(thousand|million|billion|trillion)\b)?", re.I),
     lambda m: _money(m.group(1), m.group(2), m.group(3))),
    (re.compile(rf"({_NUM}) ?([$€£¥])"), lambda m: _money(m.group(2), m.group(1), None)),
    (re.compile(rf"({_NUM}) ?%"), lambda m: _say(m.group(1)) + " percent"),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.I), lambda m: _ordinal(m.group(1))),
    (re.compile(r"#(?=\d)"), " number "),
    (re.compile(r"#(?=[^\W\d_])"), " hashtag "),
    (re.compile(r"(?<![\w.,])[-−](?=\d)"), "minus "),
    (re.compile(_NUM), lambda m: _say(m.group())),
]


def normalize_text(text: str) -> str:
    """Make text speakable: drop controls/emoji, expand numbers, abbreviations, symbols.

    Raises :class:`EmptyText` when nothing speakable remains.
    """
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]", "\n", text).replace("\t", " ")
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    out: list[str] = []
    for c in text:
        cat = unicodedata.category(c)
        if c in _SYMBOLS:
            out.append(_SYMBOLS[c])
        elif c == "\n" or cat[0] in "LN" or c in _KEEP_PUNCT:
            out.append(c)
        elif cat in ("Mn", "Mc"):  # accents on letters; lone marks and emoji selectors would be read
            if not _EMOJI_MARK.match(c) and out and unicodedata.category(out[-1][-1])[0] in "LM":
                out.append(c)
        else:  # other punctuation ("asterisk", "slash"), spaces, emoji and symbols
            out.append(" ")
    lines = (re.sub(r" +", " ", line).strip() for line in "".join(out).split("\n"))
    text = "\n".join(line for line in lines if line)
    if not any(c.isalnum() for c in text):
        raise EmptyText("text holds nothing speakable")
    return text


def split_sentences(text: str) -> list[str]:
    """Split on . ! ? ; and newlines, but not after abbreviations, initials or inside decimals."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in re.finditer(r"[.!?;]+(?=\s|$)", line):  # needs a space after: 3.5 never splits
            if m.group() == ".":
                word = (line[start : m.start()].split() or [""])[-1].lstrip("([\"'“‘")
                nxt = line[m.end() :].lstrip()[:1]
                if (word.lower() in _NO_BREAK and not (word.lower() == "etc" and nxt.isupper())
                        or re.fullmatch(r"[A-Z]|(?:[A-Za-z]\.)+[A-Za-z]", word)):
                    continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if any(c.isalnum() for c in s)]


def cut_long(sentence: str) -> list[str]:
    parts = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        head = sentence[:MAX_SENTENCE_CHARS]
        cut = max(head.rfind(", "), head.rfind(" "))
        cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 2 else MAX_SENTENCE_CHARS
        parts.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    return parts + [sentence] if sentence else parts
