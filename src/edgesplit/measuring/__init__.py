"""Measuring this machine: the profiler, its forward worker, the duty-cycled clock, the machine's
description and the profile cache on disk. The I/O side of ``core``: it may spawn processes,
send signals and read files; ``core`` may not."""
