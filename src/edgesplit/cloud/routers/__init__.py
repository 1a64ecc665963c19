"""The cloud's routes, by protocol: OIP v2, the thesis's /offload, the probe, metrics, docs."""
