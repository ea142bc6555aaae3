"""Any character as something pdflatex typesets with LaTeX2e core alone (no CJK or font packages).

A name (variant, metric, sweep) may hold any Unicode character, and a table that
does not compile is no table. ASCII stays; control characters become a space;
accented Latin letters become accent commands (é -> \\'{e}, ç -> \\c{c}: core LaTeX,
any font encoding); ß, æ, ø, œ, ł their text commands; Greek letters math symbols
(α -> $\\alpha$); compatibility forms their plain letters (ﬁ -> fi, full-width Ａ ->
A); a few punctuation marks their LaTeX spelling. Anything else (CJK, emoji, ...)
is written as its code point, [U+4E2D], so the name stays distinct and readable.
"""

from __future__ import annotations

import unicodedata

ACCENTS = {  # combining mark (after NFD) -> LaTeX accent command
    "\u0300": "`",
    "\u0301": "'",
    "\u0302": "^",
    "\u0303": "~",
    "\u0304": "=",
    "\u0306": "u",
    "\u0307": ".",
    "\u0308": '"',
    "\u030a": "r",
    "\u030b": "H",
    "\u030c": "v",
    "\u0327": "c",
    "\u0328": "k",
    "\u0323": "d",
    "\u0331": "b",
}
LETTERS = {
    "ß": r"\ss{}",
    "æ": r"\ae{}",
    "Æ": r"\AE{}",
    "ø": r"\o{}",
    "Ø": r"\O{}",
    "œ": r"\oe{}",
    "Œ": r"\OE{}",
    "ł": r"\l{}",
    "Ł": r"\L{}",
    "ı": r"\i{}",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "þ": "th",
    "Þ": "Th",
}
PUNCTUATION = {
    "–": "--",
    "—": "---",
    "‘": "`",
    "’": "'",
    "‚": ",",
    "“": "``",
    "”": "''",
    "„": ",,",
    "…": r"\ldots{}",
    "×": r"$\times$",
    "÷": r"$\div$",
    "·": r"$\cdot$",
    "•": r"$\bullet$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≠": r"$\neq$",
    "≈": r"$\approx$",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "∞": r"$\infty$",
    "°": r"$^\circ$",
    "§": r"\S{}",
    "¶": r"\P{}",
    "©": r"\copyright{}",
    "£": r"\pounds{}",
    "«": "<<",
    "»": ">>",
    "¡": "!`",
    "¿": "?`",
    "\u00a0": "~",
    "±": r"$\pm$",
}
GREEK_MACROS = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
}
GREEK_CAPITAL_MACROS = {"GAMMA", "DELTA", "THETA", "LAMDA", "XI", "PI", "SIGMA", "UPSILON", "PHI", "PSI", "OMEGA"}
GREEK_CAPITAL_LATIN = {
    "ALPHA": "A",
    "BETA": "B",
    "EPSILON": "E",
    "ZETA": "Z",
    "ETA": "H",
    "IOTA": "I",
    "KAPPA": "K",
    "MU": "M",
    "NU": "N",
    "OMICRON": "O",
    "RHO": "P",
    "TAU": "T",
    "CHI": "X",
}


def typeset(char: str, escape=lambda c: c) -> str:
    """LaTeX for one character that is not printable ASCII; `escape` spells the ASCII it may decompose to."""
    if unicodedata.category(char).startswith(("C", "Z")):  # control, format, separators: a space
        return PUNCTUATION.get(char, " ")
    if char in LETTERS or char in PUNCTUATION:
        return LETTERS.get(char) or PUNCTUATION[char]
    greek = _greek(char)
    if greek:
        return greek
    base, *marks = unicodedata.normalize("NFD", char)
    if base.isascii() and base.isalpha() and marks and all(m in ACCENTS for m in marks):
        out = escape(base)
        for mark in marks:
            out = f"\\{ACCENTS[mark]}{{{out}}}"
        return out
    plain = unicodedata.normalize("NFKD", char)
    if plain != char and all(c.isascii() and c.isprintable() or unicodedata.combining(c) for c in plain):
        return "".join(escape(c) for c in plain if c.isascii())  # ﬁ -> fi, Ａ -> A, ² -> 2
    if plain != char and len(plain) == 1 and (_greek(plain) or plain in LETTERS):  # µ (micro) -> μ
        return typeset(plain, escape)
    return f"{{[}}U+{ord(char):04X}{{]}}"  # braced: a row starting with [ would be \\\\[...]'s argument


def _greek(char: str) -> str:
    name = unicodedata.name(char, "")
    for prefix, capital in (("GREEK SMALL LETTER ", False), ("GREEK CAPITAL LETTER ", True)):
        if name.startswith(prefix):
            word = name.removeprefix(prefix)
            if word == "FINAL SIGMA":
                return r"$\varsigma$"
            if not capital and word.lower().replace("lamda", "lambda") in GREEK_MACROS:
                return rf"$\{word.lower().replace('lamda', 'lambda')}$"
            if capital and word in GREEK_CAPITAL_MACROS:
                return rf"$\{word.capitalize().replace('Lamda', 'Lambda')}$"
            if capital and word in GREEK_CAPITAL_LATIN:
                return GREEK_CAPITAL_LATIN[word]
    return ""


def comment(text: str) -> str:
    """`text` safe inside a LaTeX % comment: on one line."""
    return " ".join(text.split())
