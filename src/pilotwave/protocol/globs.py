"""GPU model constraints: globs a user writes, matched in time linear in the model name.

A constraint is one or more alternatives separated by ``|``; each is a case-insensitive
glob (``*`` any run of characters, ``?`` one character) found anywhere in the GPU's model
name: ``"A100|H100"`` takes an "NVIDIA A100-SXM4-80GB" or an "NVIDIA H100 PCIe",
``"A100*80GB"`` only the large A100.  The server matches these on every claim, so they are
not regular expressions: a pattern a user writes can never stall it.
"""

from __future__ import annotations

import re

GLOB_MAX_CHARS = 200
_ALLOWED = re.compile(r"[A-Za-z0-9 _.,:/+*?|-]*")


def check_glob(pattern: str) -> str:
    """``pattern`` if it is a valid constraint, else ``ValueError`` saying what is wrong."""
    if len(pattern) > GLOB_MAX_CHARS:
        raise ValueError(f"at most {GLOB_MAX_CHARS} characters")
    if not _ALLOWED.fullmatch(pattern):
        bad = sorted({c for c in pattern if not _ALLOWED.fullmatch(c)})
        raise ValueError(
            f"{''.join(bad)!r} not allowed: a GPU model is a glob (letters, digits, * and ?, "
            "with | between alternatives), not a regular expression"
        )
    if any(not alt.strip() for alt in pattern.split("|")):
        raise ValueError("an empty alternative would match every GPU")
    return pattern


def glob_search(pattern: str, text: str) -> bool:
    """Whether any ``|`` alternative of ``pattern`` matches somewhere in ``text`` (no case)."""
    text = text.casefold()
    return any(_search(alt.strip().casefold(), text) for alt in pattern.split("|"))


def _search(glob: str, text: str) -> bool:
    # Found anywhere = the whole text matches "*glob*".  Classic wildcard matching with one
    # backtrack point: each "*" restarts the match after the last one, so no pattern costs
    # more than len(glob) * len(text) steps.
    p = "*" + glob + "*"
    i = j = 0
    star = -1
    mark = 0
    while j < len(text):
        if i < len(p) and (p[i] == "?" or p[i] == text[j]):
            i += 1
            j += 1
        elif i < len(p) and p[i] == "*":
            star, mark = i, j
            i += 1
        elif star >= 0:
            i = star + 1
            mark += 1
            j = mark
        else:
            return False
    while i < len(p) and p[i] == "*":
        i += 1
    return i == len(p)
