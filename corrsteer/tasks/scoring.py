"""Reading the answer a generated text commits to (free-form, label and number scorers).

CorrSteer selects the features that correlate with "correct", so any leniency here becomes a steering target. The
rule everywhere: an output is scored by the one answer it commits to. An output that names two or more different
candidate answers (two labels, "X or Y", "either X or Y", a list of options) commits to none and is wrong; so is
an output that only mentions the gold without stating it as the answer ("The capital is Lyon; Paris is bigger").

    extract_label(output, labels, prompt)     -> a label, '' (none) or 'a|b' (a hedge naming both)
    score_short(output, gold, question, aliases, candidates) -> (pred, y)   free-form text or numbers
    extract_number(output, question)           -> '56', '' (none) or '54|56' (a hedge)
    numbers_in(text) -> number words as digits ('fifty-six' -> '56');  number_words(56) -> 'fifty-six'

Multiple-choice letters and refusals live in corrsteer.tasks.scoring_mc.
"""
from __future__ import annotations

import re
import unicodedata

HEDGE_SEP = "|"          # preds naming several answers join them with this: 'positive|negative'

# words that negate the phrase right after them ("not Sydney", "neither positive nor negative")
NEGATORS = {"not", "isnt", "wasnt", "never", "arent", "no", "neither", "nor", "nothing", "without", "hardly",
            "non", "rather", "instead"}
_INTENSIFIERS = {"very", "really", "that", "too", "particularly", "overly", "entirely", "exactly", "quite", "so",
                 "at", "all", "a", "an", "the"}
# words that offer alternatives when they stand next to an answer
ALTERNATION = {"or", "either", "nor", "maybe", "perhaps", "possibly"}
# content-free words: a side of "X is Y" made only of these (and the question's words) is not an answer
_FILLER = {"the", "a", "an", "of", "in", "on", "for", "to", "it", "its", "i", "think", "believe", "guess", "say",
           "would", "answer", "correct", "right", "my", "that", "this", "which", "what", "so", "well", "im", "sure",
           "pretty", "probably", "likely", "definitely", "response", "result", "final", "then", "here", "there",
           "city", "called", "named", "known", "as", "me", "let", "you", "is", "be"}


def normalize(text: str) -> str:
    """Lower case, accents and apostrophes dropped, other punctuation -> spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"['’`´]", "", text.lower())
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def clean(output: str, math: bool = False) -> str:
    """Markdown dropped ("**B**", "*B*", "`B`", "__B__", "# heading"), curly quotes made straight; with math=True
    single stars stay (7*8)."""
    output = (output or "").replace("**", "").replace("__", "").replace("`", "")
    if not math:
        output = re.sub(r"\*(?!\s)|(?<!\s)\*", "", output)
    output = re.sub(r"(?m)^\s*#+\s*", "", output)
    return output.replace("’", "'").replace("‘", "'").strip()


def _negated(words: list[str], i: int) -> bool:
    """Whether the phrase starting at words[i] is negated by the word before it (intensifiers skipped)."""
    j = i - 1
    while j >= 0 and i - j <= 3 and words[j] in _INTENSIFIERS:
        j -= 1
    return j >= 0 and words[j] in NEGATORS


def find_phrases(words: list[str], phrases) -> list[tuple[int, int, str]]:
    """Non-overlapping whole-phrase matches (start, end, phrase) on normalised words, longest phrases first, in
    text order; directly negated matches ('not Sydney') are left out."""
    taken = [False] * len(words)
    hits = []
    for ph in sorted({p for p in phrases if normalize(p)}, key=lambda p: -len(normalize(p).split())):
        p = normalize(ph).split()
        for i in range(len(words) - len(p) + 1):
            if words[i:i + len(p)] == p and not any(taken[i:i + len(p)]):
                taken[i:i + len(p)] = [True] * len(p)
                if not _negated(words, i):
                    hits.append((i, i + len(p), ph))
    return sorted(hits)


# ---------------------------------------------------------------------------------------------------- labels
def _runs(hits, words) -> list[list[tuple[int, int, str]]]:
    """Mentions grouped into runs joined only by commas / or / and ('positive, negative or neutral')."""
    runs = []
    for h in hits:
        gap = words[runs[-1][-1][1]:h[0]] if runs else None
        if gap is not None and len(gap) <= 1 and all(w in ("or", "and", "nor") for w in gap):
            runs[-1].append(h)
        else:
            runs.append([h])
    return runs


def extract_label(output: str, labels: list[str], prompt: str = "") -> str:
    """The one label the output names ('' if none; 'a|b' if it names several: a hedge). Whole words on normalised
    text; negated labels ('not negative', 'neither positive nor negative') do not count, nor does an echo of a
    list of labels that the prompt itself spells out ('positive, negative or neutral')."""
    if not labels:
        return ""
    pwords = normalize(prompt).split()
    prompt_lists = {tuple(normalize(h[2]) for h in r) for r in _runs(find_phrases(pwords, labels), pwords)
                    if len(r) >= 2}
    named = []
    for sent in sentences(clean(output)):
        words = normalize(sent).split()
        for run in _runs(find_phrases(words, labels), words):
            if len(run) >= 2 and tuple(normalize(h[2]) for h in run) in prompt_lists:
                continue                                  # the prompt's own option list, repeated
            named += [h[2] for h in run]
    distinct = list(dict.fromkeys(next(l for l in labels if normalize(l) == normalize(n)) for n in named))
    return HEDGE_SEP.join(distinct)


# ---------------------------------------------------------------------------------------------------- free text
_ABBREV = r"(?<!\b[A-Z])(?<!\bSt)(?<!\bMt)(?<!\bMr)(?<!\bDr)(?<!\bMrs)(?<!\bNo)"
_SENT_END = re.compile(_ABBREV + r"[.!?]+(?:\s+|$)|\n+")
_OPENER = re.compile(r"(?i)^(?:sure|certainly|of course|okay|ok|yes|great question|good question|hello|hi|well|"
                     r"absolutely|let me think|hmm+)\W*$")
_COPULA = re.compile(r"(?i)\b(?:it|that|this|here|there)'s\b|\b(?:is|are|was|were|would be|will be|should be)"
                     r"(?:\s+(?:called|named|known as))?\b")
_CLAUSE_END = re.compile(r"(?i)[;:()]|,\s*(?=(?:and|but|which|while|although|though|because|whereas|so|as|where|"
                         r"when|it|this|i)\b)|\s(?=(?:but|because|which|while|whereas|although|though)\b)")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_END.split(text) if s and s.strip()]


def _is_echo(part: str, question: str) -> bool:
    """A side of 'X is Y' that says nothing beyond the question ('The capital of France', 'I think it')."""
    q = set(normalize(question).split())
    return all(w in q or w in _FILLER for w in normalize(part).split())


def _sentence_span(sent: str, question: str) -> tuple[str, bool]:
    """(answer side of one sentence, whether the sentence reads as an answer statement: a bare short answer, or
    'X is Y' whose echo side restates the question, 'The capital of France is ...')."""
    sent = re.sub(r"(?i)^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-=]\s*", "", sent)
    m = _COPULA.search(sent)
    if not m:
        span = _CLAUSE_END.split(sent)[0].strip()
        return span, 1 <= len(normalize(span).split()) <= 4
    x, y = sent[:m.start()], _CLAUSE_END.split(sent[m.end():])[0]
    if not _is_echo(x, question) and _is_echo(y, question):
        x, y = y, x
    q = set(normalize(question).split()) - _FILLER
    restates = len(set(normalize(x).split()) & q) >= 2
    short = 1 <= len(normalize(y).split()) <= 3 and not _is_echo(y, question)
    return y.strip(), restates or short


def answer_span(output: str, question: str = "", names=()) -> str:
    """The answer the output states: the first sentence that reads as an answer statement or names one of `names`
    (the gold and the task's candidate answers), after openers like 'Sure!' and an echo of the question; in it,
    for 'X is Y' the side that is not an echo of the question (Y by default), cut at the end of the clause.
    Without such a sentence, the first one."""
    sents = [s for s in sentences(clean(output)) if not _OPENER.match(s)]
    sents = [s for s in sents if not (question and normalize(s) and normalize(s) in normalize(question))] or sents
    spans = [_sentence_span(s, question) for s in sents]
    for span, statement in spans:
        if statement or find_phrases(normalize(span).split(), names):
            return span
    return spans[0][0] if spans else ""


def _list_items(span: str) -> int:
    """How many short items a comma / slash separated span lists ('Paris, Lyon, Marseille' -> 3; prose -> 0)."""
    parts = [p.strip() for p in re.split(r"\s*[,/]\s*|\s+(?:or|and)\s+", span) if p.strip()]
    short = all(1 <= len(normalize(p).split()) <= 3 and not set(normalize(p).split()) & _FILLER for p in parts)
    return len(parts) if short else 0


def _hedged(span_words: list[str], gold_hit: tuple[int, int, str], others: list) -> bool:
    """Whether the answer span offers alternatives to the gold it names."""
    s, e, _ = gold_hit
    rest = span_words[:s] + span_words[e:]
    if set(rest) & ALTERNATION or others:
        return True
    after = span_words[e:e + 2]
    return after[:1] == ["and"] and len(after) == 2 and after[1] not in _FILLER | {"its", "has", "also", "located"}


def score_text(output: str, gold: str, question: str = "", aliases=(), candidates=()) -> tuple[str, float]:
    """Free-form text answer: right when the stated answer (answer_span) names the gold or an alias, not negated,
    and offers no alternative (or / either / a list / another of the task's candidate answers)."""
    golds = (gold, *aliases)
    span = answer_span(output, question, (*golds, *candidates))
    words = normalize(span).split()
    hits = find_phrases(words, golds)
    if not hits:
        return span[:60], 0.0
    others = [h for h in find_phrases(words, [c for c in candidates if normalize(c) not in map(normalize, golds)]
                                      + list(golds)) if normalize(h[2]) not in map(normalize, golds)]
    all_words = normalize(clean(output)).split()
    alt_nearby = any(set(all_words[max(0, h[0] - 1):h[0]] + all_words[h[1]:h[1] + 1]) & {"or", "either", "nor"}
                     for h in find_phrases(all_words, golds))
    if _hedged(words, hits[0], others) or alt_nearby or _list_items(span) >= 3:
        return f"{span[:60]}", 0.0
    return gold, 1.0


# ---------------------------------------------------------------------------------------------------- numbers
_N = r"-?\d+(?:\.\d+)?"
_NUM = rf"(?<![\w.])({_N})(?![\w])"
_NO_OP = r"(?!\s*[-+*/x×÷^]\s*\d)"
_ANSWER_MARK = re.compile(r"(?i)(?:answer|result|total|sum|product|difference)(?:\s+(?:is|would be|will be)\s*[:=]?"
                          rf"|\s*[:=])\s*(?:equal to\s*)?({_N})(?![\d\w]){_NO_OP}")
_EQUALS = re.compile(rf"(?:=|\bequals\b|\bis equal to\b)\s*({_N}){_NO_OP}(?![\d\w])")
_NUM_WEAK = re.compile(   # "7 times 8 is 56", "which gives you 56", "you get 56"
    rf"(?i)\b(?:is|are|gives(?: you)?|makes|get|results? in)\s+({_N})(?![\d\w]){_NO_OP}(?!\s*%)")
_NUM_ALT = re.compile(rf"(?i)(?<!neither )(?<!not )(?<![\w.])({_N})\s*(?:,\s*)?(?:\bor\b|/)\s*(?:maybe\s+|perhaps\s+)?"
                      rf"({_N})(?![\w])")
_NUM_LIST = re.compile(rf"(?<![\w.])({_N})((?:\s*,\s*{_N}){{1,}})\s*,?\s*(?:\band\b|\bor\b)?\s*({_N})?(?![\w.])")


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    raise ValueError(n)


_NUM_WORDS = {w: i for i, w in enumerate(_ONES)} | {w: 10 * i for i, w in enumerate(_TENS) if w}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUM_WORD = "(?:" + "|".join(sorted(list(_NUM_WORDS) + list(_SCALES), key=len, reverse=True)) + ")"
_NUM_WORD_RX = re.compile(rf"\b{_NUM_WORD}(?:(?:[\s-]+|\s+and\s+){_NUM_WORD})*\b", re.I)


def _parse_number_words(span: str) -> list[int]:
    """'fifty-six' -> [56]; 'one hundred and five' -> [105]; 'seven eight' -> [7, 8]."""
    words = [w for w in re.split(r"[\s-]+", span.lower()) if w]
    nums, total, cur, last = [], 0, 0, None

    def flush():
        nonlocal total, cur, last
        if last is not None:
            nums.append(total + cur)
        total, cur, last = 0, 0, None

    for i, w in enumerate(words):
        if w == "and":
            if last in ("hundred", "scale") and i + 1 < len(words) and words[i + 1] in _NUM_WORDS:
                continue
            flush()
            continue
        if w in _NUM_WORDS:
            v = _NUM_WORDS[w]
            kind = "unit" if v < 10 else "teen" if v < 20 else "ten"
            ok = last in (None, "hundred", "scale") or (kind == "unit" and last == "ten")
            if not ok:
                flush()
            cur += v
            last = kind
        elif w == "hundred":
            if last not in ("unit", "teen") or cur >= 100:
                flush()
                cur, last = 100, "hundred"
                continue
            cur *= 100
            last = "hundred"
        else:  # thousand / million
            if last is None or last == "scale":
                flush()
                cur = 1
            total += cur * _SCALES[w]
            cur, last = 0, "scale"
    flush()
    return nums


def numbers_in(text: str) -> str:
    """Text with number words written as digits and thousands separators dropped ('1,000' -> '1000')."""
    text = _NUM_WORD_RX.sub(lambda m: " ".join(map(str, _parse_number_words(m.group(0)))), text)
    return re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _stated_number(text: str, operands: list[float]) -> str:
    m = _ANSWER_MARK.search(text) or _EQUALS.search(text) or _NUM_WEAK.search(text)
    if m:
        return fmt_number(float(m.group(1)))
    nums = [float(x) for x in re.findall(_NUM, text)]
    if not nums:
        return ""
    rest = list(nums)
    for o in operands:
        if o in rest:
            rest.remove(o)
    return fmt_number(rest[0] if rest else nums[0])


def number_alternatives(text: str, operands: list[float]) -> list[str]:
    """Distinct numbers the text offers as alternative answers ('56 or 54', '54, 55, 56', two different 'the answer
    is' values); numbers that restate the question's operands do not count."""
    alts = []
    for m in _NUM_ALT.finditer(text):
        alts += [m.group(1), m.group(2)]
    for m in _NUM_LIST.finditer(text):
        vals = [m.group(1)] + re.findall(_N, m.group(2)) + ([m.group(3)] if m.group(3) else [])
        if sum(float(v) not in operands for v in vals) >= 2:
            alts += vals
    alts += [m.group(1) for m in _ANSWER_MARK.finditer(text)]
    out = list(dict.fromkeys(fmt_number(float(v)) for v in alts))
    new = [v for v in out if float(v) not in operands]
    return out if len(out) >= 2 and new else []


def extract_number(output: str, question: str = "") -> str:
    """The numeric answer in `output`: '' if none, 'a|b' if it offers several. The number after 'the answer is' /
    '=' / 'equals' when present, else after 'is' / 'gives' / 'makes', else the first number that does not restate
    one of the question's numbers (each question number cancels one occurrence), else the first number."""
    text = numbers_in(clean(output, math=True))
    operands = [float(x) for x in re.findall(_NUM, numbers_in(question))]
    alts = number_alternatives(text, operands)
    if alts:
        return HEDGE_SEP.join(alts)
    return _stated_number(text, operands)


NUMERIC = re.compile(r"^-?\d+(?:\.\d+)?$")


def score_short(output: str, gold: str, question: str = "", aliases=(), candidates=()) -> tuple[str, float]:
    """Free-form answer: numeric golds compare the one number stated (extract_number); others use score_text."""
    if NUMERIC.match(gold.strip()):
        pred = extract_number(output, question)
        ok = pred != "" and HEDGE_SEP not in pred and \
            abs(float(pred) - float(gold)) <= 1e-6 * max(1.0, abs(float(gold)))
        return pred, float(ok)
    return score_text(output or "", gold, question, aliases, candidates)
