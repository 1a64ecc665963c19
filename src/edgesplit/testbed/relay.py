"""The userspace delay relay as a process, for the root testbed's cloud namespace.

Run as ``python -m edgesplit.testbed.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
RTT_MS``: a ``LinkEmulator`` without a rate cap (the ``tbf`` qdisc caps the uplink) that adds
``RTT_MS / 2`` in each direction. It prints ``{"ready": true}`` once it listens and runs until it
is killed. Each line ``{"rtt_ms": R}`` on its standard input changes the round trip in place (the
dynamic suite's replay).
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
                      listen_port=int(listen_port), rtt_ms=float(rtt_ms)) as link:
        threading.Thread(target=_follow, args=(link,), daemon=True).start()
        print(json.dumps({"ready": True}), flush=True)
        stop.wait()


def _follow(link: LinkEmulator) -> None:
    for line in sys.stdin:
        link.set_rtt_ms(float(json.loads(line)["rtt_ms"]))


if __name__ == "__main__":
    main(sys.argv[1:])
