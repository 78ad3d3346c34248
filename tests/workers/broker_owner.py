"""Own a run's embedded broker, then leave by the way the test asks.

    python -m tests.workers.broker_owner OUTPUT_DIR exit|raise|wait

Prints one JSON line {"server_pid", "owned", "url"} once the broker answers; `wait`
sleeps until a signal (the test sends SIGINT, SIGTERM or SIGKILL).
"""

from __future__ import annotations

import json
import sys
import time

from omniopd.config import parse_config
from workers.broker import broker_for, find_embedded_broker

if __name__ == "__main__":
    output_dir, mode = sys.argv[1], sys.argv[2]
    config = parse_config({"run": {"name": "owner", "output_dir": output_dir}})
    with broker_for(config) as endpoint:
        state = find_embedded_broker(config.run.output_dir)
        print(json.dumps({"server_pid": state.server_pid, "owned": endpoint.owned, "url": endpoint.url}), flush=True)
        if mode == "raise":
            raise RuntimeError("deliberate failure inside the broker's lifetime")
        if mode == "wait":
            time.sleep(120)
