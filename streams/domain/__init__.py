"""Pure domain logic: events, timelines, stages, SLA policy, corridor aggregates.

Nothing in this package imports faust, aiokafka or prometheus_client, so the stream
worker and the batch report share one definition of every figure.
"""
