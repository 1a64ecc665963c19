"""The thesis's evaluation and the demo, on the testbed: the experiment, its runs file, its
tables and figures, the measurement-log report, the fleet simulation and the demo."""
