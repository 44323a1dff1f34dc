"""Rule-based prompt parsing: objects and (subject, relation, object) triplets, with token indices.

No language model is needed: a relation is one of a fixed set of phrasings (longest match wins),
the text between two relation phrases is one object phrase, and a chain "A r1 B r2 C" yields
(A r1 B) and (B r2 C), as Learn-to-Steer does. Object phrases drop leading framing ("a photo of"),
articles and trailing punctuation; an object's tokens are every tokenizer token of its remaining
words ("teddy bear" -> the tokens of both words, "red circle" -> of both), found by tokenizing
prefixes of the prompt, so any Hugging Face tokenizer (CLIP BPE, T5 sentencepiece, word level) works.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .relations import PHRASES, RELATIONS

# phrasing -> canonical relation (``relations.TABLE``); matched case-insensitively on word boundaries
RELATION_PHRASES: dict[str, str] = PHRASES
_FRAMING = re.compile(r"^(?:(?:a|an|the)\s+)?(?:photo|picture|image|painting|drawing|rendering)\s+of(?:\s+|$)", re.I)
_ARTICLE = re.compile(r"^(?:a|an|the|one|some)\s+", re.I)
_SEPARATOR = re.compile(r"\s*(?:,|;|\band\b|\bwith\b|\bnext to\b)\s*", re.I)
_RELATION_RE = re.compile(r"\b(" + "|".join(sorted((re.escape(p) for p in RELATION_PHRASES), key=len, reverse=True))
                          + r")\b", re.I)


class PromptParseError(ValueError):
    """The prompt states a relation but its objects cannot be read off it."""


@dataclass(frozen=True)
class PromptObject:
    """An object phrase: its words, character span in the prompt and token indices in the tokenizer."""
    name: str
    span: tuple[int, int]
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Triplet:
    """subject/object index into ``ParsedPrompt.objects``; relation is one of ``relations.RELATIONS``."""
    subject: int
    relation: str
    object: int


@dataclass
class ParsedPrompt:
    prompt: str
    objects: list[PromptObject] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)

    def describe(self) -> list[str]:
        """Human-readable triplets, e.g. ``['red circle | left of | blue square']``."""
        return [f"{self.objects[t.subject].name} | {t.relation} | {self.objects[t.object].name}" for t in self.triplets]

    def token_lists(self) -> list[list[int]]:
        """Token indices per object (the ``tokens`` argument of the map extraction)."""
        return [list(o.tokens) for o in self.objects]


def _object_phrase(prompt: str, start: int, end: int, side: str) -> tuple[str, tuple[int, int]] | None:
    """The object phrase in prompt[start:end]: the part nearest the relation (after the last
    separator for a subject, before the first for an object), without framing and articles."""
    text = prompt[start:end]
    # punctuation right next to the relation ("a cat, below a dog") belongs to neither object
    if side == "subject":
        text = text.rstrip(" ,;")
    else:
        stripped = text.lstrip(" ,;")
        start, text = start + len(text) - len(stripped), stripped
    pieces = [(m.start(), m.end()) for m in _SEPARATOR.finditer(text)]
    if side == "subject" and pieces:
        start, text = start + pieces[-1][1], text[pieces[-1][1]:]
    elif side == "object" and pieces:
        text = text[: pieces[0][0]]
    for pattern in (_FRAMING, _ARTICLE):
        m = pattern.match(text.lstrip())
        if m:
            lead = len(text) - len(text.lstrip())
            start, text = start + lead + m.end(), text[lead + m.end():]
    lead = len(text) - len(text.lstrip())
    start, text = start + lead, text.strip()
    text = text.rstrip(" .!?")
    if not re.search(r"\w", text):
        return None
    return text, (start, start + len(text))


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prefix_offset(tokenizer: Any, prompt: str) -> int:
    """How many special tokens (e.g. CLIP's BOS) precede the prompt's first token."""
    full = list(tokenizer(prompt)["input_ids"])
    plain = _ids(tokenizer, prompt)
    for off in range(len(full) - len(plain) + 1):
        if full[off: off + len(plain)] == plain:
            return off
    raise PromptParseError(f"cannot align the tokenizer's output with the prompt {prompt!r}")


def token_indices(tokenizer: Any, prompt: str, span: tuple[int, int]) -> tuple[int, ...]:
    """Indices (in the tokenizer's full encoding of ``prompt``) of the tokens that cover prompt[span]."""
    before = len(_ids(tokenizer, prompt[: span[0]].rstrip())) if prompt[: span[0]].strip() else 0
    upto = len(_ids(tokenizer, prompt[: span[1]]))
    if upto <= before:
        raise PromptParseError(f"{prompt[span[0]:span[1]]!r} maps to no token")
    off = _prefix_offset(tokenizer, prompt)
    idx = tuple(range(off + before, off + upto))
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 10**6 and idx[-1] >= limit - 1:
        raise PromptParseError(f"{prompt[span[0]:span[1]]!r} lies beyond the tokenizer's {limit}-token limit "
                               "(the text encoder never sees it): shorten the prompt")
    return idx


def parse_prompt(prompt: str, tokenizer: Any | None = None) -> ParsedPrompt:
    """Objects and triplets of ``prompt``; token indices are filled when a tokenizer is given.

    A prompt without a relation phrase yields no triplets (generation then runs unsteered).
    Raises ``PromptParseError`` when a relation phrase lacks a subject or an object
    ("to the left of a cat") or an object is beyond the tokenizer's length limit.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    matches = list(_RELATION_RE.finditer(prompt))
    parsed = ParsedPrompt(prompt)
    if not matches:
        return parsed
    bounds = [0] + [x for m in matches for x in (m.start(), m.end())] + [len(prompt)]
    phrases = []
    for j in range(len(matches) + 1):
        start, end = bounds[2 * j], bounds[2 * j + 1]
        # a middle phrase is the object of one relation and the subject of the next; its part
        # nearest the relation before it is read, as for any object
        phrase = _object_phrase(prompt, start, end, "subject" if j == 0 else "object")
        if phrase is None:
            rel = matches[min(j, len(matches) - 1)].group(0)
            where = "before" if j == 0 else "after"
            raise PromptParseError(f"no object {where} {rel!r} in {prompt!r}")
        phrases.append(phrase)
    for name, span in phrases:
        tokens = token_indices(tokenizer, prompt, span) if tokenizer is not None else ()
        parsed.objects.append(PromptObject(name, span, tokens))
    for j, m in enumerate(matches):
        parsed.triplets.append(Triplet(j, RELATION_PHRASES[m.group(0).lower()], j + 1))
    return parsed


def make_triplets(objects: Sequence[Sequence[int]], triplets: Sequence[tuple[int, str, int]],
                  names: Sequence[str] | None = None, prompt: str = "") -> ParsedPrompt:
    """Explicit override: token indices per object and (subject, relation, object) index triplets.

    >>> make_triplets([[2], [6, 7]], [(0, "left of", 1)]).describe()
    ['object0 | left of | object1']
    """
    parsed = ParsedPrompt(prompt)
    for i, toks in enumerate(objects):
        toks = tuple(int(t) for t in toks)
        if not toks or min(toks) < 0:
            raise ValueError(f"object {i}: give at least one non-negative token index, got {toks}")
        parsed.objects.append(PromptObject(names[i] if names else f"object{i}", (0, 0), toks))
    for s, rel, o in triplets:
        if rel not in RELATIONS:
            raise ValueError(f"relation {rel!r} not in {RELATIONS}")
        if not (0 <= s < len(objects) and 0 <= o < len(objects)) or s == o:
            raise ValueError(f"triplet ({s}, {rel!r}, {o}) must name two different objects of {len(objects)}")
        parsed.triplets.append(Triplet(int(s), rel, int(o)))
    return parsed
