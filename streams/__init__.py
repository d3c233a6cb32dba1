"""corridor: per-shipment timelines and trade-corridor SLA metrics from Kafka, with Faust."""

__version__ = "0.1.0"
