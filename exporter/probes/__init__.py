"""Probe implementations. Each returns an :class:`exporter.outcome.ProbeResult`."""
