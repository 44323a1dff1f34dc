"""Rule-based prompt parsing: objects and (subject, relation, object) triplets, with token indices.

No language model is needed (nothing is downloaded). The grammar, as the parser reads it:

    prompt   := [framing] part (SEP part)*        framing: "a photo of", "an image of", ...
    part     := NP rel-tail+                      "a dog to the left of a cat"
              | REL NP (COP | ",") NP             fronted: "to the left of a cat is a dog" -> (dog, left of, cat)
    rel-tail := RELS NP ("and" NP)*               coordinated objects: "... left of a cat and a bird"
              | SEP RELS NP                       shared subject: "a cat left of a dog and right of a bird"
    RELS     := REL ("and" REL)*                  shared object: "a dog to the left of and above a cat"
    SEP      := "," | ";" | "and"
    COP      := "is" | "are" (ignored elsewhere: "a cat is above a dog")

- A relation right after an object continues a CHAIN: "A r1 B r2 C" gives (A r1 B), (B r2 C), as
  Learn-to-Steer reads its chained prompts; after a separator, a new NP followed by a relation
  starts a new pair ("a A r1 a B and a C r2 a D": two independent pairs).
- REL is one of the phrasings in ``relations.TABLE`` (longest match wins, case-insensitive). A
  phrase right after a determiner ("a right of way sign", "an above-ground pool") is part of a
  name, not a relation.
- Phrases that name no direction ("next to", "near", "beside", "on side of", "in front of",
  "behind", ...) are UNSUPPORTED: they are reported (``ParsedPrompt.unsupported``, with a warning)
  and steer nothing; they are never read as a direction.
- NP: the words between markers, without framing and determiners (a, an, the, one, two, ...);
  a prepositional phrase ends the name ("a cat with a hat" -> "cat"). "it" names the most recent
  earlier object that is not the relation's subject; with none, the prompt is refused.

An object's tokens are every tokenizer token of its name's words ("teddy bear" -> both words'
tokens), found by tokenizing prefixes of the prompt, so any Hugging Face tokenizer (CLIP BPE, T5
sentencepiece, word level) gives exact indices into its own encoding of the prompt.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

from .relations import PHRASES, RELATIONS, relation

# phrasing -> canonical relation (``relations.TABLE``); matched case-insensitively on word boundaries
RELATION_PHRASES: dict[str, str] = PHRASES
# phrasings of relations that name no image direction: reported, never steered
UNSUPPORTED_PHRASES: tuple[str, ...] = (
    "next to", "near to", "near", "nearby", "beside", "besides", "close to", "on side of", "on the side of",
    "at the side of", "by the side of", "in front of", "behind", "in back of", "far from", "across from", "opposite",
    "around", "inside", "outside",
)
DETERMINERS = ("a", "an", "the", "one", "two", "three", "four", "some", "another", "this", "that", "these", "those",
               "its", "his", "her", "their", "my", "our", "your")
PRONOUNS = ("it", "them")
_FRAMING = re.compile(r"^(?:(?:a|an|the)\s+)?(?:(?:close-up|realistic|high-quality|detailed)\s+)?"
                      r"(?:photo|photograph|picture|image|painting|drawing|rendering|illustration|scene)\s+of(?:\s+|$)",
                      re.I)
_DETERMINER = re.compile(r"^(?:" + "|".join(DETERMINERS) + r")\s+", re.I)
_FILLER = re.compile(r"^(?:there\s+(?:is|are)|there)(?:\s+|$)", re.I)
# a prepositional phrase or clause inside an object phrase ends its name
_NAME_END = re.compile(r"\s+(?:with|wearing|holding|in|on|at|from|that|which|who|sitting|standing|lying)\b.*$", re.I)
_MARKERS = sorted([(p, "rel") for p in RELATION_PHRASES] + [(p, "unsupported") for p in UNSUPPORTED_PHRASES],
                  key=lambda pk: len(pk[0]), reverse=True)
_MARKER_RE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p, _ in _MARKERS) + r")(?![\w-])", re.I)
_KIND = dict(_MARKERS)
_GAP_RE = re.compile(r"(,|;|\band\b|\bis\b|\bare\b)", re.I)
_ADJUNCT = re.compile(r"^(?:on|in|at|during|with|from|into|onto|inside|outside|under|against|for|of)\b", re.I)
_DETERMINER_BEFORE = re.compile(r"(?:^|\s)(?:" + "|".join(DETERMINERS) + r")\s*$", re.I)


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
    """Objects, steerable triplets and (reported only) unsupported relations of a prompt."""
    prompt: str
    objects: list[PromptObject] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    unsupported: list[tuple[int, str, int]] = field(default_factory=list)   # (subject, phrase, object)

    def describe(self) -> list[str]:
        """Human-readable triplets, e.g. ``['red circle | left of | blue square']``."""
        return [f"{self.objects[t.subject].name} | {t.relation} | {self.objects[t.object].name}" for t in self.triplets]

    def token_lists(self) -> list[list[int]]:
        """Token indices per object (the ``tokens`` argument of the map extraction)."""
        return [list(o.tokens) for o in self.objects]


# ---------------------------------------------------------------------------------------------
# lexing: markers (relations, unsupported phrases, separators, copulas) and object phrases

@dataclass
class _Tok:
    kind: str                 # "NP", "REL", "UNSUP", "SEP", "COP"
    text: str                 # NP: the name; REL: canonical relation; UNSUP: the phrase; else the word
    span: tuple[int, int]


def _clean_name(prompt: str, start: int, end: int) -> tuple[str, tuple[int, int]] | None:
    """The object name in prompt[start:end] without framing, determiners, fillers and trailing
    prepositional phrases; None when nothing nameable is left."""
    text = prompt[start:end]
    lead = len(text) - len(text.lstrip())
    start, text = start + lead, text.strip()
    changed = True
    while changed:
        changed = False
        for pattern in (_FRAMING, _FILLER, _DETERMINER):
            m = pattern.match(text)
            if m and m.end() > 0:
                start, text, changed = start + m.end(), text[m.end():], True
    if _ADJUNCT.match(text):
        return None                                   # ", on a sunny day": a setting, not an object
    m = _NAME_END.search(text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"\s+there$", "", text.rstrip(" .!?\"'"), flags=re.I)
    if not re.search(r"\w", text):
        return None
    return text, (start, start + len(text))


def _lex(prompt: str) -> list[_Tok]:
    markers = []
    for m in _MARKER_RE.finditer(prompt):
        if _DETERMINER_BEFORE.search(prompt[: m.start()]):
            continue                                  # "a right of way sign": part of a name
        phrase = m.group(0).lower()
        kind = _KIND[phrase]
        markers.append(_Tok("REL" if kind == "rel" else "UNSUP",
                            RELATION_PHRASES[phrase] if kind == "rel" else phrase, (m.start(), m.end())))
    toks: list[_Tok] = []
    pos = 0
    for mk in markers + [None]:
        gap_end = mk.span[0] if mk is not None else len(prompt)
        at = pos
        for g in _GAP_RE.finditer(prompt, pos, gap_end):
            name = _clean_name(prompt, at, g.start())
            if name:
                toks.append(_Tok("NP", *name))
            word = g.group(0).lower()
            toks.append(_Tok("COP" if word in ("is", "are") else "SEP", word, (g.start(), g.end())))
            at = g.end()
        name = _clean_name(prompt, at, gap_end)
        if name:
            toks.append(_Tok("NP", *name))
        if mk is not None:
            toks.append(mk)
            pos = mk.span[1]
    return toks


# ---------------------------------------------------------------------------------------------
# parsing

def parse_prompt(prompt: str, tokenizer: Any | None = None, warn: bool = True) -> ParsedPrompt:
    """Objects and triplets of ``prompt`` (see the module doc for the grammar); token indices are
    filled when a tokenizer is given.

    A prompt without a relation phrase yields no triplets (generation then runs unsteered);
    unsupported relations ("next to") are listed in ``unsupported`` with a warning (``warn``).
    Raises ``PromptParseError`` when a relation phrase lacks a subject or an object ("to the left of
    a cat"), "it" refers to nothing, or an object is beyond the tokenizer's length limit.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    parsed = ParsedPrompt(prompt)
    toks = _lex(prompt)
    if not any(t.kind in ("REL", "UNSUP") for t in toks):
        return parsed
    _Parser(parsed, toks).run()
    if tokenizer is not None:
        parsed.objects = [PromptObject(o.name, o.span, token_indices(tokenizer, prompt, o.span)) for o in parsed.objects]
    if warn and parsed.unsupported:
        said = ", ".join(f"{parsed.objects[s].name!r} {p} {parsed.objects[o].name!r}" for s, p, o in parsed.unsupported)
        warnings.warn(f"l2s: unsupported relation(s) not steered: {said} (supported: {', '.join(RELATIONS)})",
                      UserWarning, stacklevel=2)
    return parsed


class _Parser:
    """One left-to-right pass over the lexed prompt (module doc: the grammar)."""

    def __init__(self, parsed: ParsedPrompt, toks: list[_Tok]):
        self.p, self.toks = parsed, toks
        self.pending: list[_Tok] = []         # relations waiting for their object
        self.pending_subject: int | None = None
        self.group: tuple[int, list[_Tok]] | None = None    # last (subject, relations): coordinated objects reuse it
        self.fronted: list[_Tok] = []         # a clause that opens with its relation
        self.fronted_object: int | None = None

    def error(self, what: str) -> PromptParseError:
        return PromptParseError(f"{what} in {self.p.prompt!r}")

    def add_object(self, tok: _Tok, subject: int | None) -> int:
        if tok.text.lower() in PRONOUNS:
            for idx in range(len(self.p.objects) - 1, -1, -1):
                if idx != subject:
                    return idx
            raise self.error(f"{tok.text!r} refers to no earlier object")
        self.p.objects.append(PromptObject(tok.text, tok.span))
        return len(self.p.objects) - 1

    def relate(self, subject: int, rels: list[_Tok], obj: int) -> None:
        if subject == obj:
            raise self.error(f"a relation between {self.p.objects[subject].name!r} and itself")
        for r in rels:
            if r.kind == "REL":
                self.p.triplets.append(Triplet(subject, r.text, obj))
            else:
                self.p.unsupported.append((subject, r.text, obj))

    def run(self) -> None:
        toks = self.toks
        last_np: int | None = None          # the object phrase just read (a chain's next subject)
        prev = None
        for i, tok in enumerate(toks):
            nxt = toks[i + 1].kind if i + 1 < len(toks) else None
            if tok.kind == "NP":
                if self.pending:
                    obj = self.add_object(tok, self.pending_subject)
                    self.relate(self.pending_subject, self.pending, obj)
                    self.group, self.pending = (self.pending_subject, self.pending), []
                    last_np = obj
                elif self.fronted and self.fronted_object is None:
                    self.fronted_object = last_np = self.add_object(tok, None)
                elif self.fronted:
                    subject = self.add_object(tok, self.fronted_object)
                    self.relate(subject, self.fronted, self.fronted_object)
                    self.group, self.fronted, self.fronted_object = (subject, self.fronted), [], None
                    last_np = subject
                elif prev == "SEP" and self.group is not None and nxt in (None, "SEP"):
                    obj = self.add_object(tok, self.group[0])          # "... left of a cat and a bird"
                    self.relate(self.group[0], self.group[1], obj)
                    last_np = obj
                else:
                    last_np = self.add_object(tok, None)
            elif tok.kind in ("REL", "UNSUP"):
                if self.pending and prev == "SEP":
                    self.pending.append(tok)                              # "left of and above a cat"
                elif self.pending:
                    raise self.error(f"no object after {self.pending[-1].text!r}")
                elif self.fronted and self.fronted_object is None and prev == "SEP":
                    self.fronted.append(tok)
                elif prev == "NP" or (prev == "COP" and last_np is not None and toks[i - 2].kind == "NP"):
                    self.pending, self.pending_subject = [tok], last_np       # a pair, or a chain
                elif prev == "SEP" and self.group is not None:
                    self.pending, self.pending_subject = [tok], self.group[0]  # shared subject
                elif prev == "SEP" and last_np is not None and toks[i - 2].kind == "NP":
                    self.pending, self.pending_subject = [tok], last_np       # "a cat, below a dog"
                elif not self.p.objects and not self.fronted:
                    self.fronted = [tok]                                   # "to the left of a cat is a dog"
                else:
                    raise self.error(f"no object before {tok.text!r}")
            prev = tok.kind
        if self.pending:
            raise self.error(f"no object after {self.pending[-1].text!r}")
        if self.fronted:
            what = self.fronted[0].text
            raise self.error(f"no object before {what!r}" if self.fronted_object is not None
                             else f"no object after {what!r}")


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


def list_phrases(phrases: Sequence[str]) -> str:
    """English list: "A", "A and B", "A, B and C"."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def object_list(parsed: ParsedPrompt, tokenizer: Any | None = None) -> ParsedPrompt:
    """The same objects and triplets with the relation words dropped from the text: the prompt
    becomes the plain list "a A, a B and a C" (token indices re-found in it when a tokenizer is
    given). Steering then carries the relations alone; the denoiser reads only what to draw (see
    ``SteeringConfig.list_prompt_from``).

    >>> object_list(parse_prompt("a cat to the left of a dog above a bird")).prompt
    'a cat, a dog and a bird'
    """
    names = [f"a {o.name}" for o in parsed.objects]
    text = list_phrases(names)
    out = ParsedPrompt(text, triplets=list(parsed.triplets), unsupported=list(parsed.unsupported))
    at = 0
    for o, name in zip(parsed.objects, names):
        start = text.index(name, at) + 2                # past "a "
        at = start + len(o.name)
        tokens = token_indices(tokenizer, text, (start, at)) if tokenizer is not None else ()
        out.objects.append(PromptObject(o.name, (start, at), tokens))
    return out


def distinguishing_tokens(parsed: ParsedPrompt, tokenizer: Any) -> ParsedPrompt:
    """The same prompt with each object's tokens cut to the words that tell it apart from the
    prompt's other objects: beside "orange cross", "orange diamond" keeps "diamond" only. A word
    two objects share gets nearly the same map for both, which pulls the two objects' maps toward
    each other; an object with no word of its own (or with tokens given by hand) keeps all of them.
    Names, spans and triplets are unchanged; only ``PromptObject.tokens`` narrow.
    """
    words = [[(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"\S+", o.name)] for o in parsed.objects]
    out = ParsedPrompt(parsed.prompt, triplets=list(parsed.triplets), unsupported=list(parsed.unsupported))
    for i, obj in enumerate(parsed.objects):
        others = {w for j, ws in enumerate(words) if j != i for *_, w in ws}
        own = [(s, e) for s, e, w in words[i] if w not in others]
        start, end = obj.span
        if not obj.tokens or parsed.prompt[start:end] != obj.name or not own or len(own) == len(words[i]):
            out.objects.append(obj)
            continue
        tokens = sorted({t for s, e in own for t in token_indices(tokenizer, parsed.prompt, (start + s, start + e))})
        out.objects.append(PromptObject(obj.name, obj.span, tuple(tokens)))
    return out


def implied_triplets(parsed: ParsedPrompt) -> ParsedPrompt:
    """The same prompt with the relations its triplets imply added after them: "A left of B left
    of C" also gives (A, left of, C). On each axis the stated relations order the objects; every
    ordered pair the order implies and no triplet states (either way round) is added, in the
    relation word the prompt used first on that axis. Pairs a contradictory prompt orders both ways
    get nothing. Steering the implied pair pushes the chain's ends apart, which leaves room for the
    middle object (a straight chain's usual failure: both later objects drawn on the same side).

    >>> implied_triplets(parse_prompt("a cat left of a dog left of a bird")).describe()[-1]
    'cat | left of | bird'
    """
    out = ParsedPrompt(parsed.prompt, list(parsed.objects), list(parsed.triplets), list(parsed.unsupported))
    n = len(parsed.objects)
    for axis in (0, 1):
        stated = [t for t in parsed.triplets if relation(t.relation).axis == axis]
        if not stated:
            continue
        before = [[False] * n for _ in range(n)]        # before[u][v]: u's coordinate is smaller than v's
        for t in stated:
            low, high = (t.subject, t.object) if relation(t.relation).sign < 0 else (t.object, t.subject)
            before[low][high] = True
        for k in range(n):                              # transitive closure (Warshall)
            for u in range(n):
                if before[u][k]:
                    for v in range(n):
                        before[u][v] = before[u][v] or before[k][v]
        said = {frozenset((t.subject, t.object)) for t in stated}
        word = stated[0].relation
        for u in range(n):
            for v in range(n):
                if u != v and before[u][v] and not before[v][u] and frozenset((u, v)) not in said:
                    subject, obj = (u, v) if relation(word).sign < 0 else (v, u)
                    out.triplets.append(Triplet(subject, word, obj))
    return out


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
