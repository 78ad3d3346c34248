"""Reproductions of the paper's analyses: the estimator study (Section 6.1, Table 3) and
sensitivity sweeps (Tables 4-5). They sit above the processes (they use the audit's ledger
guard and the rollout worker's chunk records) and below the CLI."""
