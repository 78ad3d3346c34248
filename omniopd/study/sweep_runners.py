"""What one sweep cell runs: the demo (Tables 4-5: Pass@1 after training with the cell's
settings) or the estimator study (Table 3's MSE and Pearson for the cell's phi, N, alpha,
C, M)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omniopd.config import load_config
from omniopd.study.sweep import CellResult, Metric


def _pairs(overrides: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


@dataclass
class DemoCell:
    """`omniopd demo` (variant full) with the cell's overrides, in the cell's directory; the
    prepared student (and teacher model) are shared by every cell."""

    config_path: Path
    teacher: str = "model"
    teacher_tokenizer: str = "student"
    seed: int = 0
    prepared_root: Path | None = None
    base_overrides: tuple[str, ...] = ()
    log: Callable[[str], None] = print
    kind: str = "demo"
    columns: tuple[tuple[str, float, int], ...] = (("Pass@1 before", 100, 1), ("Pass@1 after", 100, 1),
                                                   ("change (pts)", 100, 1), ("steps", 1, 0))

    @property
    def settings(self) -> dict:
        return {"config": str(self.config_path), "teacher": self.teacher, "teacher_tokenizer": self.teacher_tokenizer,
                "seed": self.seed, "set": list(self.base_overrides)}

    def run(self, overrides: dict[str, str], cell_dir: Path) -> CellResult:
        from workers.demo.run import DemoSettings, run_demo

        settings = DemoSettings(config_path=self.config_path, workdir=cell_dir, seed=self.seed, variants=["full"],
                                resume=True, overrides=[*self.base_overrides, *_pairs(overrides)], dashboard=False,
                                teacher=self.teacher, teacher_tokenizer=self.teacher_tokenizer,
                                prepared_root=self.prepared_root, log=self.log)
        (r,) = run_demo(settings)
        lo_b, hi_b = r.ci_before or (None, None)
        lo_a, hi_a = r.ci_after or (None, None)
        return CellResult(
            metrics={"Pass@1 before": Metric(r.pass_before, lo_b, hi_b), "Pass@1 after": Metric(r.pass_after, lo_a, hi_a),
                     "change (pts)": Metric(r.delta), "steps": Metric(float(r.steps))},
            spend_usd=r.spend_usd, extra={"train_s": r.train_s, "output_dir": r.output_dir, "separation": r.separation})


@dataclass
class StudyCell:
    """`omniopd study estimator` for the cell's estimator.phi / estimator.n / estimator.alpha /
    chunking settings (one phi and one N per cell: the grid chooses them)."""

    config_path: Path
    chunks: int = 300
    oracle_dir: Path | None = None
    serve: str = "none"
    base_overrides: tuple[str, ...] = ()
    resamples: int = 1000
    log: Callable[[str], None] = print
    kind: str = "study"
    columns: tuple[tuple[str, float, int], ...] = (("MSE freq", 1, 4), ("MSE Bayes", 1, 4), ("Corr freq", 1, 3),
                                                   ("Corr Bayes", 1, 3))

    @property
    def settings(self) -> dict:
        return {"config": str(self.config_path), "chunks": self.chunks, "oracle": str(self.oracle_dir),
                "serve": self.serve, "set": list(self.base_overrides), "resamples": self.resamples}

    def run(self, overrides: dict[str, str], cell_dir: Path) -> CellResult:
        from omniopd.study.estimator_study import StudySettings
        from omniopd.study.run import StudyRequest, run_estimator_study

        cfg = load_config(self.config_path, [*self.base_overrides, *_pairs(overrides),
                                             f"run.output_dir={cell_dir}"])
        e = cfg.estimator
        settings = StudySettings(chunks=self.chunks, ns=(e.n,), alpha=e.alpha, phis=(e.phi,), cut=e.cut,
                                 resamples=self.resamples, seed=cfg.run.seed)
        request = StudyRequest(cfg, self.config_path, settings, cell_dir / "study", oracle_dir=self.oracle_dir,
                               serve=self.serve, run_name=f"{cfg.run.name}-sweep-{cell_dir.name}"[:120])
        result, _ = run_estimator_study(request, log=self.log)
        (row,) = [r for r in result.rows if r.target == "normalised"]

        def m(interval) -> Metric:
            return Metric(interval.value, interval.low, interval.high)

        return CellResult(metrics={"MSE freq": m(row.freq.mse), "MSE Bayes": m(row.bayes.mse),
                                   "Corr freq": m(row.freq.pearson), "Corr Bayes": m(row.bayes.pearson)},
                          spend_usd=result.spend_usd, extra={"seconds": result.seconds})
