"""Eq. 8 (OmniOPD), Eq. 1/19 (SFT), Eq. 2 (white-box OPD): hand cases, properties, Theorem 4.4."""

import functools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from omniopd.algo.chunks import layout_from_spans
from omniopd.algo.estimator import bayesian_proxy, chunk_proxies
from omniopd.algo.losses import omniopd_loss, opd_whitebox_loss, sft_loss
from omniopd.algo.similarity import phi_batch, words
from omniopd.algo.sliced import HiddenStates

LOG = math.log


def _hand_case():
    f64 = torch.float64
    student = torch.tensor(
        [[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]]], dtype=f64
    ).log()
    reference = torch.tensor(
        [[[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]], dtype=f64
    ).log()
    targets = torch.tensor([[0, 2, 1, 1]])
    layout = layout_from_spans([[(0, 2)]], lengths=[4], seq_len=4)  # chunk [0, 2), U = {2, 3}
    return student.requires_grad_(), reference, targets, layout


def test_omniopd_loss_hand_computed():
    student, reference, targets, layout = _hand_case()
    out = omniopd_loss(
        student,
        reference,
        targets,
        layout,
        torch.tensor([0.4], dtype=torch.float64),
        beta=0.1,
        vocab_slice=2,
    )
    chunk = -0.4 * (LOG(0.5) + LOG(0.5))
    kl2 = 0.5 * LOG(0.5 / 0.6) + 0.3 * LOG(0.3 / 0.2)
    kl3 = 2 * 0.2 * LOG(0.2 * 3) + 0.6 * LOG(0.6 * 3)
    assert out.loss.item() == pytest.approx(chunk + 0.1 * (kl2 + kl3), abs=1e-12)
    assert out.chunk_loss == pytest.approx(chunk) and out.kl_term == pytest.approx(
        0.1 * (kl2 + kl3)
    )
    assert out.kl == pytest.approx((kl2 + kl3) / 2)
    assert out.audited_fraction == 0.5 and out.audited_tokens == 2 and out.unaudited_tokens == 2
    assert out.proxy_mean == out.proxy_min == out.proxy_max == pytest.approx(0.4)
    assert set(out.metrics()) >= {"loss", "chunk_loss", "kl", "proxy_mean", "audited_fraction"}


def _random_batch(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    b, t, h, v = 3, 10, 5, 17
    student = HiddenStates(
        torch.randn(b, t, h, dtype=dtype, generator=gen, requires_grad=True),
        torch.randn(v, h, dtype=dtype, generator=gen, requires_grad=True),
    )
    reference = HiddenStates(
        student.hidden.detach() + 0.3 * torch.randn(b, t, h, dtype=dtype, generator=gen),
        student.weight.detach(),
    )
    targets = torch.randint(0, v, (b, t), generator=gen)
    layout = layout_from_spans(
        [[(0, 3), (5, 7)], [(2, 4)], []], lengths=[9, 10, 6], seq_len=t, offsets=[1, 0, 2]
    )
    proxies = torch.tensor([0.9, 0.2, 0.5], dtype=dtype)
    return student, reference, targets, layout, proxies


def test_normalisations_are_rescalings_of_the_batch_sum_and_parts_add_up():
    student, reference, targets, layout, proxies = _random_batch()
    outs = {
        how: omniopd_loss(student, reference, targets, layout, proxies, beta=0.2, normalisation=how)
        for how in ("sum", "sequence", "token")
    }
    total = outs["sum"].loss.item()
    assert outs["sequence"].loss.item() == pytest.approx(total / 3)
    assert outs["token"].loss.item() == pytest.approx(total / 25)  # 9 + 10 + 6 response tokens
    for out in outs.values():
        assert out.loss.item() == pytest.approx(out.chunk_loss + out.kl_term)
    with pytest.raises(ValueError, match="normalisation"):
        omniopd_loss(student, reference, targets, layout, proxies, beta=0.2, normalisation="mean")


def test_loss_equals_the_dense_formula_of_eq_8():
    student, reference, targets, layout, proxies = _random_batch()
    out = omniopd_loss(
        student, reference, targets, layout, proxies, beta=0.2, token_slice=4, vocab_slice=5
    )
    ls = torch.log_softmax(student.hidden @ student.weight.T, -1)
    lr = torch.log_softmax(reference.hidden @ reference.weight.T, -1)
    lp = ls.gather(-1, targets[..., None]).squeeze(-1)
    weight = torch.cat([proxies, proxies.new_zeros(1)])[layout.chunk_index]
    kl = (lr.exp() * (lr - ls)).sum(-1)
    expected = -(weight * lp).sum() + 0.2 * (kl * layout.unaudited_mask).sum()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_kl_term_is_zero_when_theta_equals_the_reference():
    student, _, targets, layout, proxies = _random_batch()
    same = HiddenStates(student.hidden.detach(), student.weight.detach())
    out = omniopd_loss(student, same, targets, layout, proxies, beta=1.0)
    assert out.kl == 0.0 and out.kl_term == 0.0


def test_beta_zero_ablation_needs_no_reference_and_refusals_say_why():
    student, reference, targets, layout, proxies = _random_batch()
    with_ref = omniopd_loss(student, reference, targets, layout, proxies, beta=0.0)
    without = omniopd_loss(student, None, targets, layout, proxies, beta=0.0)
    assert with_ref.loss.item() == without.loss.item() == pytest.approx(with_ref.chunk_loss)
    assert without.kl == 0.0
    with pytest.raises(ValueError, match="reference"):
        omniopd_loss(student, None, targets, layout, proxies, beta=0.1)
    with pytest.raises(ValueError, match="one per chunk"):
        omniopd_loss(student, reference, targets, layout, proxies[:2], beta=0.1)


def test_proxies_are_detached_weights():
    student, reference, targets, layout, proxies = _random_batch()
    proxies = proxies.clone().requires_grad_()
    omniopd_loss(student, reference, targets, layout, proxies, beta=0.1).loss.backward()
    assert proxies.grad is None and student.hidden.grad is not None


def test_a_batch_without_chunks_is_pure_anchor():
    student, reference, targets, _, _ = _random_batch()
    layout = layout_from_spans([[], [], []], lengths=[10, 10, 10], seq_len=10)
    out = omniopd_loss(
        student, reference, targets, layout, torch.zeros(0, dtype=torch.float64), beta=0.5
    )
    assert out.chunk_loss == 0.0 and out.audited_fraction == 0.0 and out.kl > 0


def test_chunk_proxies_use_the_current_policy_prior_and_alpha_zero_is_frequentist():
    student, _, targets, layout, _ = _random_batch()
    k = torch.tensor([2.5, 0.0, 10.0])
    est = chunk_proxies(student, targets, layout, k, n=10, alpha=1.0, vocab_slice=4)
    lp = (
        torch.log_softmax(student.hidden @ student.weight.T, -1)
        .gather(-1, targets[..., None])
        .squeeze(-1)
    )
    priors = [lp[layout.chunk_index == c].mean().exp().item() for c in range(3)]
    assert est.prior.tolist() == pytest.approx(priors, rel=1e-9)
    assert est.proxy.tolist() == pytest.approx(
        [(ki + p) / 11 for ki, p in zip(k.tolist(), priors, strict=True)]
    )
    assert est.proxy[1] > 0 and not est.proxy.requires_grad
    frequentist = chunk_proxies(student, targets, layout, k, n=10, alpha=0.0)
    assert frequentist.proxy.tolist() == pytest.approx([0.25, 0.0, 1.0])


def test_loss_gradient_matches_finite_differences_on_a_tiny_model():
    torch.manual_seed(0)
    vocab, hidden = 13, 4
    body = nn.Sequential(nn.Embedding(vocab, hidden), nn.Linear(hidden, hidden), nn.Tanh()).double()
    head = nn.Linear(hidden, vocab, bias=False).double()
    ids = torch.randint(0, vocab, (2, 6))
    targets = torch.randint(0, vocab, (2, 6))
    with torch.no_grad():
        reference = HiddenStates(body(ids) + 0.1, head.weight + 0.05)
    layout = layout_from_spans([[(1, 3)], [(0, 2), (4, 6)]], lengths=[6, 6], seq_len=6)
    names = [name for name, _ in body.named_parameters()]
    params = (*(p for _, p in body.named_parameters()), head.weight)
    est = chunk_proxies(
        HiddenStates(body(ids), head.weight),
        targets,
        layout,
        torch.tensor([3.0, 0.0, 7.5]),
        10,
        1.0,
    )

    def loss(*ps):
        hidden = functional_call(body, dict(zip(names, ps[:-1], strict=True)), (ids,))
        return omniopd_loss(
            HiddenStates(hidden, ps[-1]),
            reference,
            targets,
            layout,
            est.proxy,
            beta=0.3,
            normalisation="token",
            token_slice=3,
            vocab_slice=4,
        ).loss

    assert torch.autograd.gradcheck(loss, params)


def _rouge1_equivalent(text: str, rng: random.Random) -> str:
    """Same multiset of rouge tokens, different surface: shuffled order, case, punctuation."""
    tokens = words(text)
    rng.shuffle(tokens)
    return " ".join(rng.choice([t.upper(), t.capitalize(), f"({t}),", f"{t}!"]) for t in tokens)


def test_theorem_4_4_loss_is_invariant_to_phi_equivalent_continuations_but_sft_is_not():
    rng = random.Random(0)
    student_chunk = "so we factor the quadratic and get x equals 3 or x equals 1"
    original = [
        "we factor it and x equals 3",
        "the roots are 1 and 3 so x equals 1",
        "answer 7",
        "x equals 3",
    ]
    restyled = [_rouge1_equivalent(t, rng) for t in original]
    assert all(a != b for a, b in zip(original, restyled, strict=True))
    for probe in (
        student_chunk,
        "x equals 3",
        "7 answer",
        "",
        "roots roots are",
    ):  # phi(z, y) = phi(z, y') for all z
        assert phi_batch("rouge1", probe, original) == phi_batch("rouge1", probe, restyled)

    student, reference, targets, _, _ = _random_batch()
    layout = layout_from_spans([[(0, 4)], [], []], lengths=[10, 10, 10], seq_len=10)
    prior = chunk_proxies(student, targets, layout, torch.zeros(1), 4, 1.0).prior

    def chunk_objective(continuations):
        k = torch.tensor(
            [sum(phi_batch("rouge1", student_chunk, continuations))], dtype=torch.float64
        )
        proxies = bayesian_proxy(k, len(continuations), 1.0, prior)
        return omniopd_loss(student, reference, targets, layout, proxies, beta=0.1).loss.item()

    assert chunk_objective(original) == chunk_objective(restyled)

    # SFT (Eq. 19) on the teacher's tokens (a character vocabulary here) sees the surface form
    table = torch.randn(128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def sft_objective(continuations):
        seqs = [[ord(ch) % 128 for ch in text] for text in continuations]
        length = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (length - len(s)) for s in seqs])
        mask = torch.tensor([[i < len(s) for i in range(length)] for s in seqs])
        logits = table[
            F.pad(ids, (1, 0))[:, :-1]
        ]  # [N, L, V]: a bigram model of the previous token
        return sft_loss(logits, ids, mask, normalisation="sequence").loss.item()

    assert sft_objective(original) != pytest.approx(sft_objective(restyled), rel=1e-3)


def test_sft_loss_hand_computed_and_eq_19_average():
    student, _, targets, _ = _hand_case()
    mask = torch.tensor([[True, True, True, False]])
    out = sft_loss(student, targets, mask)
    assert out.loss.item() == pytest.approx(-(LOG(0.5) + LOG(0.5) + LOG(0.2)))
    assert out.nll_per_token == pytest.approx(out.loss.item() / 3) and out.tokens == 3
    two = torch.cat([student, student]), torch.cat([targets, targets]), torch.cat([mask, mask])
    assert sft_loss(*two, normalisation="sequence").loss.item() == pytest.approx(out.loss.item())


def test_whitebox_opd_is_half_forward_plus_half_reverse_kl():
    student, reference, _, _ = _hand_case()
    mask = torch.ones(1, 4, dtype=torch.bool)
    out = opd_whitebox_loss(student, reference, mask, vocab_slice=2)
    ls, lt = torch.log_softmax(student, -1), torch.log_softmax(reference, -1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="sum")  # KL(teacher || student)
    reverse = F.kl_div(lt, ls, log_target=True, reduction="sum")  # KL(student || teacher)
    assert out.loss.item() == pytest.approx(0.5 * forward.item() + 0.5 * reverse.item(), abs=1e-12)
    assert out.forward_kl == pytest.approx(forward.item() / 4) and out.reverse_kl == pytest.approx(
        reverse.item() / 4
    )
    only_forward = opd_whitebox_loss(student, reference, mask, forward_weight=1.0)
    assert only_forward.loss.item() == pytest.approx(forward.item(), abs=1e-12)
    same = opd_whitebox_loss(student, student.detach(), mask)
    assert same.loss.item() == 0.0
    out.loss.backward()
    assert torch.isfinite(student.grad).all()


# ------------------------------------------------------------------ Theorem 4.1(a), Eq. 11


def _score_model(seed=0):
    """A tiny differentiable model: token embeddings -> tanh layer -> LM head."""
    torch.manual_seed(seed)
    vocab, hidden = 11, 5
    body = nn.Sequential(nn.Embedding(vocab, hidden), nn.Linear(hidden, hidden), nn.Tanh()).double()
    head = nn.Linear(hidden, vocab, bias=False).double()
    return body, head, vocab


def _flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


def test_eq_11_chunk_gradient_is_bounded_by_the_students_score_for_every_proxy_in_0_1():
    """Theorem 4.1(a): ||proxy * sum_{t in c} grad log pi(y_t)|| <= sum_{t in c} ||grad log pi(y_t)||
    for every estimator value in [0, 1]; the chunk loss's gradient is exactly -proxy times the
    score sum (the estimator is a multiplier, not a denominator or a log)."""
    body, head, vocab = _score_model()
    params = [*body.parameters(), head.weight]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, 8), generator=gen)
    targets = torch.randint(0, vocab, (1, 8), generator=gen)
    layout = layout_from_spans([[(2, 6)]], lengths=[8], seq_len=8)  # one chunk, tokens 2..5

    def student():
        return HiddenStates(body(ids), head.weight)

    logp = torch.log_softmax(head(body(ids)), -1).gather(-1, targets[..., None])[0, :, 0]  # [T]
    scores = [_flat_grad(logp[t], params) for t in range(2, 6)]
    score_sum, bound = torch.stack(scores).sum(0), sum(g.norm() for g in scores)
    assert score_sum.norm() < bound  # the triangle inequality is strict here: the bound is not trivial
    for proxy in [0.0, 1e-6, 0.3, 0.77, 1.0, *torch.rand(5, generator=gen, dtype=torch.float64).tolist()]:
        out = omniopd_loss(student(), None, targets, layout, torch.tensor([proxy], dtype=torch.float64), beta=0.0)
        grad = _flat_grad(out.loss, params)
        assert torch.allclose(grad, -proxy * score_sum, atol=1e-12)
        assert grad.norm() <= bound + 1e-12


def test_reverse_kl_gradient_of_eq_2_is_unbounded_as_teacher_mass_vanishes_but_eq_8s_is_not():
    """The contrast of Theorem 4.1(a): as the teacher's probability of a token the student
    samples goes to 0, white-box OPD's reverse-KL gradient grows without bound (like
    log 1/p), while the chunk loss's gradient stays under the score bound whatever the proxy."""
    logits = torch.tensor([[[1.0, 0.5, -0.5, 0.2]]], dtype=torch.float64, requires_grad=True)  # [1, 1, V]
    mask = torch.ones(1, 1, dtype=torch.bool)
    score = torch.autograd.grad(torch.log_softmax(logits, -1)[0, 0, 0], logits)[0].norm()
    norms = []
    for p in (1e-2, 1e-8, 1e-32, 1e-128):
        teacher = torch.tensor([[[p, 0.4, 0.3, 0.3 - p]]], dtype=torch.float64).log()
        out = opd_whitebox_loss(logits, teacher, mask, forward_weight=0.0)  # reverse KL only
        norms.append(torch.autograd.grad(out.loss, logits)[0].norm().item())
    assert norms == sorted(norms) and norms[-1] > 20 * score.item()
    layout = layout_from_spans([[(0, 1)]], lengths=[1], seq_len=1)
    for proxy in (0.0, 0.5, 1.0):  # whatever the teacher did, the proxy is in [0, 1]
        out = omniopd_loss(logits, None, torch.tensor([[0]]), layout, torch.tensor([proxy], dtype=torch.float64), beta=0.0)
        assert torch.autograd.grad(out.loss, logits)[0].norm() <= score + 1e-12


# ------------------------------------------------------------------ Theorem 4.3, Eq. 17


def _budget_problem(seed=0):
    """Fixed hidden states, a trainable LM head (the Eq. 8 objective is convex in it), two
    sequences with one chunk each and the rest un-audited."""
    gen = torch.Generator().manual_seed(seed)
    b, t, h, v = 2, 12, 6, 9
    hidden = torch.randn(b, t, h, dtype=torch.float64, generator=gen)
    w_ref = torch.randn(v, h, dtype=torch.float64, generator=gen)
    targets = torch.randint(0, v, (b, t), generator=gen)
    layout = layout_from_spans([[(3, 6)], [(7, 10)]], lengths=[t, t], seq_len=t)
    proxies = torch.tensor([0.8, 0.35], dtype=torch.float64)
    return hidden, w_ref, targets, layout, proxies


def _chunk_term_and_kl_budget(hidden, w, w_ref, targets, layout, proxies):
    """L_chunk(theta) and sum_{t in U} KL(pi_ref || pi_theta), computed densely here (not by the loss)."""
    ls = torch.log_softmax(hidden @ w.T, -1)  # [B, T, V]
    lr = torch.log_softmax(hidden @ w_ref.T, -1)
    lp = ls.gather(-1, targets[..., None]).squeeze(-1)  # [B, T]
    weight = torch.cat([proxies, proxies.new_zeros(1)])[layout.chunk_index]
    chunk = -(weight * lp * layout.audited_mask).sum()
    kl = (F.kl_div(ls, lr, log_target=True, reduction="none").sum(-1) * layout.unaudited_mask).sum()
    return chunk.item(), kl.item()


@functools.cache
def _minimiser(beta: float, anchor_weight: float = 1.0) -> torch.Tensor:
    """argmin over the LM head of Eq. 8 with the anchor weighted beta * anchor_weight (cached:
    several tests share a minimiser)."""
    hidden, w_ref, targets, layout, proxies = _budget_problem()
    w = w_ref.clone().requires_grad_()
    reference = hidden @ w_ref.T  # [B, T, V]
    optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=150, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = omniopd_loss(hidden @ w.T, reference, targets, layout, proxies, beta=beta * anchor_weight).loss
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach()


@pytest.mark.parametrize("beta", [0.05, 0.3, 2.0])
def test_eq_17_kl_budget_holds_at_the_minimiser_of_eq_8(beta):
    """Theorem 4.3: at theta* = argmin Eq. 8, sum_{t in U} KL(pi_ref || pi_theta*) <=
    (L_chunk(theta_ref) - L_chunk(theta*)) / beta. Both sides are computed densely from
    their definitions, so a loss that anchored the wrong tokens, the wrong direction or with
    the wrong weight would be caught (see the next test)."""
    hidden, w_ref, targets, layout, proxies = _budget_problem()
    w_star = _minimiser(beta)
    chunk_ref, kl_ref = _chunk_term_and_kl_budget(hidden, w_ref, w_ref, targets, layout, proxies)
    chunk_star, kl_star = _chunk_term_and_kl_budget(hidden, w_star, w_ref, targets, layout, proxies)
    assert kl_ref == pytest.approx(0.0, abs=1e-12)
    assert 0 < kl_star <= (chunk_ref - chunk_star) / beta * (1 + 1e-9)
    assert beta * kl_star > 0.05 * (chunk_ref - chunk_star)  # the anchor did spend budget: not vacuous


@pytest.mark.parametrize("anchor_weight", [0.05, 0.0])
def test_eq_17_budget_shrinks_as_beta_grows_and_a_mis_weighted_anchor_breaks_it(anchor_weight):
    """beta -> infinity pins pi_theta* to pi_ref on U; an anchor weighted beta/20 in the loss
    (a scaling bug), or dropped, spends more KL than Eq. 17 allows at beta."""
    hidden, w_ref, targets, layout, proxies = _budget_problem()
    budgets = []
    for beta in (0.05, 0.3, 2.0, 20.0):
        w_star = _minimiser(beta)
        budgets.append(_chunk_term_and_kl_budget(hidden, w_star, w_ref, targets, layout, proxies)[1])
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] < 0.02 * budgets[0]
    beta = 2.0
    w_bug = _minimiser(beta, anchor_weight)
    chunk_ref, _ = _chunk_term_and_kl_budget(hidden, w_ref, w_ref, targets, layout, proxies)
    chunk_bug, kl_bug = _chunk_term_and_kl_budget(hidden, w_bug, w_ref, targets, layout, proxies)
    assert kl_bug > (chunk_ref - chunk_bug) / beta
