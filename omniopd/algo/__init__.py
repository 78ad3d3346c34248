"""The paper's mathematics as pure functions (see docs/algo.md): entropy (Eq. 6), chunks
(Eq. 7), similarity phi (Eq. 3), estimators (Eq. 3-5, 10), blockwise token statistics, and
the losses (Eq. 8; baselines Eq. 1/19 and Eq. 2). Tensors and strings in, no config, no I/O."""
