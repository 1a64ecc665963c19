"""The userspace delay relay as a process, for the root testbed's cloud namespace.

Run as ``python -m edgesplit.testbed.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
RTT_MS [SEED]``: a ``LinkEmulator`` without a rate cap (the ``tbf`` qdisc caps the uplink) that
adds ``RTT_MS / 2`` in each direction. It prints ``{"ready": true}`` once it listens, then takes
one JSON line at a time on stdin, ``{"rtt_ms": R, "jitter_ms": J}``, answering
``{"rtt_ms": R, "jitter_ms": J}`` once applied, until stdin closes or it is killed.
"""

from __future__ import annotations

import json
import signal
import sys

from edgesplit.testbed.link import LinkEmulator


def main(argv: list[str]) -> None:
    listen_host, listen_port, target_host, target_port, rtt_ms, *seed = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LinkEmulator(target_host, int(target_port), listen_host=listen_host,
                      listen_port=int(listen_port), rtt_ms=float(rtt_ms),
                      seed=int(seed[0]) if seed else 0) as link:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            knobs = json.loads(line)
            link.set_rtt_ms(float(knobs["rtt_ms"]))
            link.set_jitter_ms(float(knobs["jitter_ms"]))
            print(json.dumps({"rtt_ms": knobs["rtt_ms"], "jitter_ms": knobs["jitter_ms"]}),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
