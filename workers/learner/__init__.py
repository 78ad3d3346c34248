"""The learner process: claim audit bundles, train (Eq. 8 or another objective),
record and consume in one transaction, checkpoint, publish (docs/learner.md).

    run.py     `run_learner`: store, run row, resume, trainer, broker, driver, signals, ranks
    loop.py    the learner loop: claim, train, record + consume, checkpoint, publish
    driver.py  issues rollout batches ahead of the learner, paced by the policy lag
    output.py  TensorBoard, progress bar and log lines
"""
