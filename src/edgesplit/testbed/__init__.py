"""Emulating the uplink and the edge's clock on one machine: link, relay, namespaces, benches."""
