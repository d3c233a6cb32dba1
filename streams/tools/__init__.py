"""Batch and operator tools behind `corridor`: replay, report, shipment view, simulator. They use
the domain in batch (the same rules as the worker) and never import the worker (docs/architecture.md)."""
