"""The learner process: claim audit bundles, train (Eq. 8 or another objective),
record and consume in one transaction, checkpoint, publish (docs/learner.md).

    loop.py    the learner loop and `run_learner` (store, broker, driver, resume)
    driver.py  issues rollout batches ahead of the learner, paced by the policy lag
    output.py  TensorBoard, progress bar and log lines
"""
