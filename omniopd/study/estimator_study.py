"""The estimator study (Section 6.1, Table 3 of the OmniOPD paper): how well the frequentist
ratio k_sem/N and the Bayesian proxy (Eq. 3-5) track an open-weight teacher's exact chunk
probability.

    1. student chunks: the config's student, prompt template, M, C and placement (Eq. 6-7),
       each with its prior (Eq. 4)                                   student_chunks.py
    2. oracle: the teacher's length-normalised probability of each chunk given its prefix,
       from its own weights and tokenizer                             oracle.py
    3. samples: N_max continuations per chunk through the teacher client (ledger, caps,
       rate limits), cut to the chunk's length (estimator.cut)       sampling.py
    4. for every phi and every N: k_sem (Eq. 3), frequentist k_sem/N, Bayesian proxy
       (Eq. 5, alpha); MSE and Pearson against the oracle with paired bootstrap
       intervals over chunks                                          metrics.py

Also reported: the same against the unnormalised sequence probability (for exact match with
character cuts, mu_c of Eq. 9 *is* that probability, up to tokenization, so it is the target
the frequentist ratio is unbiased for), and the measured mean of k_sem/N, prior and oracle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from omniopd.algo.estimator import bayesian_proxy, frequentist_proxy
from omniopd.algo.similarity import cut_continuation, phi_batch
from omniopd.study.metrics import Agreement, Interval, agreement, bootstrap_indices, difference
from omniopd.study.oracle import OracleScore
from omniopd.study.student_chunks import StudyChunk

TARGETS = ("normalised", "sequence")
"""normalised: exp(mean log p) over the chunk's teacher tokens (the paper's oracle); sequence: exp(sum log p)."""


@dataclass(frozen=True)
class StudySettings:
    """What the study measures, as plain values (the CLI fills them from the config and options)."""

    chunks: int = 1000
    ns: tuple[int, ...] = (10, 20)
    alpha: float = 1.0
    phis: tuple[str, ...] = ("rouge1", "rougeL", "jaccard", "bleu1", "bleu2", "edit", "exact", "embedding")
    cut: str = "words"
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunks < 2:
            raise ValueError(f"--chunks must be >= 2 (MSE and correlation need chunks), got {self.chunks}")
        if not self.ns or min(self.ns) < 1:
            raise ValueError(f"every N must be >= 1, got {list(self.ns)}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


@dataclass(frozen=True)
class Row:
    """One line of Table 3: one phi, one N, against one oracle target."""

    phi: str
    n: int
    target: str
    freq: Agreement
    bayes: Agreement
    bayes_minus_freq_mse: Interval
    bayes_minus_freq_pearson: Interval
    mean_freq: float
    mean_bayes: float
    zero_k: float  # fraction of chunks with k_sem = 0 (where the frequentist ratio collapses)


@dataclass
class StudyResult:
    settings: StudySettings
    rows: list[Row]
    chunks: int
    mean_oracle: dict[str, float]
    mean_prior: float
    pearson_prior: dict[str, float]  # the student prior alone vs the oracle (alpha -> infinity)
    seconds: dict[str, float] = field(default_factory=dict)
    spend_usd: float = 0.0
    run_name: str | None = None
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "chunks": self.chunks,
            "mean_oracle": self.mean_oracle,
            "mean_prior": self.mean_prior,
            "pearson_prior": self.pearson_prior,
            "seconds": self.seconds,
            "spend_usd": self.spend_usd,
            "run_name": self.run_name,
            "meta": self.meta,
            "rows": [_row_json(r) for r in self.rows],
        }


def _row_json(row: Row) -> dict:
    def ag(a: Agreement) -> dict:
        return {"mse": a.mse.as_dict(), "pearson": a.pearson.as_dict(), "degenerate_resamples": a.degenerate}

    return {"phi": row.phi, "n": row.n, "target": row.target, "freq": ag(row.freq), "bayes": ag(row.bayes),
            "bayes_minus_freq": {"mse": row.bayes_minus_freq_mse.as_dict(), "pearson": row.bayes_minus_freq_pearson.as_dict()},
            "mean_freq": row.mean_freq, "mean_bayes": row.mean_bayes, "zero_k_fraction": row.zero_k}


def phi_scores(phi: str, chunks: Sequence[StudyChunk], samples: Sequence[Sequence[str]], cut: str) -> np.ndarray:
    """[K, N_max] phi of every (chunk, continuation), each continuation cut to the chunk's length first."""
    rows = []
    for chunk, texts in zip(chunks, samples, strict=True):
        rows.append(phi_batch(phi, chunk.text, [cut_continuation(t, chunk.text, cut) for t in texts]))  # type: ignore[arg-type]
    return np.asarray(rows, dtype=np.float64)


def analyse(chunks: Sequence[StudyChunk], oracle: Sequence[OracleScore], samples: Sequence[Sequence[str]],
            settings: StudySettings, *, log: Callable[[str], None] = print) -> StudyResult:
    """Steps 4 of the module docstring on collected chunks, oracle scores and samples."""
    if not len(chunks) == len(oracle) == len(samples):
        raise ValueError(f"{len(chunks)} chunks, {len(oracle)} oracle scores, {len(samples)} sample lists: one each per chunk")
    n_max = max(settings.ns)
    short = [c.index for c, s in zip(chunks, samples, strict=True) if len(s) < n_max]
    if short:
        raise ValueError(f"chunks {short[:5]} have fewer than N = {n_max} samples")
    truth = {"normalised": np.array([o.normalised for o in oracle]), "sequence": np.array([o.sequence for o in oracle])}
    prior = np.array([c.prior for c in chunks])
    indices = bootstrap_indices(len(chunks), settings.resamples, settings.seed)
    rows: list[Row] = []
    for phi in settings.phis:
        t0 = time.monotonic()
        scores = phi_scores(phi, chunks, samples, settings.cut)  # [K, N_max]
        for n in settings.ns:
            k = scores[:, :n].sum(axis=1)  # Eq. 3
            freq = frequentist_proxy(k, n)
            bayes = bayesian_proxy(k, n, settings.alpha, prior)  # Eq. 5
            for target in TARGETS:
                d_mse, d_r = difference(bayes, freq, truth[target], indices)
                rows.append(Row(phi, n, target, agreement(freq, truth[target], indices),
                                agreement(bayes, truth[target], indices), d_mse, d_r,
                                float(freq.mean()), float(bayes.mean()), float((k == 0).mean())))
        log(f"phi {phi}: scored in {time.monotonic() - t0:.1f} s")
    from omniopd.study.metrics import pearson

    return StudyResult(
        settings=settings, rows=rows, chunks=len(chunks),
        mean_oracle={t: float(v.mean()) for t, v in truth.items()}, mean_prior=float(prior.mean()),
        pearson_prior={t: pearson(prior, v) for t, v in truth.items()},
    )


def write_outputs(result: StudyResult, out_dir: Path, chunks: Sequence[StudyChunk], oracle: Sequence[OracleScore],
                  samples: Sequence[Sequence[str]], plot: Path | None = None) -> dict[str, Path]:
    """results.json, table.md, per-chunk data (chunks.jsonl) and the plot; returns their paths."""
    from omniopd.study.report import markdown, plot_study

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "table.md", "chunks": out_dir / "chunks.jsonl",
             "plot": plot or out_dir / "estimator-study.png"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    paths["markdown"].write_text(markdown(result) + "\n\n" + markdown(result, target="sequence", paper=False) + "\n")
    with paths["chunks"].open("w") as f:
        for chunk, score, texts in zip(chunks, oracle, samples, strict=True):
            f.write(json.dumps({**chunk.as_dict(), "oracle_logprobs": score.logprobs, "oracle": score.normalised,
                                "oracle_sequence": score.sequence, "samples": list(texts)}) + "\n")
    plot_study(result, paths["plot"])
    return paths


def read_chunks_jsonl(path: Path) -> tuple[list[StudyChunk], list[OracleScore], list[list[str]]]:
    """The per-chunk data `write_outputs` wrote: chunks, oracle scores and samples, for a new analysis
    (another alpha, phi or N <= the samples kept) without sampling again."""
    chunks, oracle, samples = [], [], []
    fields = set(StudyChunk.__dataclass_fields__)
    with Path(path).open() as f:
        for line in f:
            record = json.loads(line)
            chunks.append(StudyChunk(**{k: v for k, v in record.items() if k in fields}))
            oracle.append(OracleScore(record["oracle_logprobs"]))
            samples.append(record["samples"])
    return chunks, oracle, samples
