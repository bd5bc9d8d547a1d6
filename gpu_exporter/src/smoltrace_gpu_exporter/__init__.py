"""smoltrace GPU exporter: NVML sampling per evaluation run, energy/CO2, Prometheus and OTLP."""

__version__ = "0.1.0"
