"""Emulating the uplink and the edge's clock on one machine, and the demo and reports using them."""
