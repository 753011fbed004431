"""Running the whole platform on one machine: ``tickforge up | down | status | logs`` (lifecycle)
and ``tickforge doctor`` (checks with a verdict and a hint each). These read the worker registry,
the local stack and the supervisor; nothing below imports them."""
