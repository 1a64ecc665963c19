"""The userspace delay relay as a process, for the root testbed's cloud namespace.

Run as ``python -m edgesplit.testbed.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
RTT_MS``: a ``LinkEmulator`` without a rate cap (the ``tbf`` qdisc caps the uplink) that adds
``RTT_MS / 2`` in each direction. It prints ``{"ready": true}`` once it listens and runs until it
is killed.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from edgesplit.testbed.link import LinkEmulator


def main(argv: list[str]) -> None:
    listen_host, listen_port, target_host, target_port, rtt_ms = argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LinkEmulator(target_host, int(target_port), listen_host=listen_host,
                      listen_port=int(listen_port), rtt_ms=float(rtt_ms)):
        print(json.dumps({"ready": True}), flush=True)
        stop.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
