"""smoltrace: the evaluation runner (`smoltrace-eval`) and its embedded OTLP collector."""

__version__ = "0.1.0"
