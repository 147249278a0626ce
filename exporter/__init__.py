"""vantage-exporter: scheduled HTTP(S) probes, every outcome classified, exported to Prometheus."""

__version__ = "0.1.0"
