"""The Faust worker: app wiring (`app.create_app`), the agents' per-partition state (`pipeline`),
the write-behind tables, metrics, views, the broker watch and the version-guarded patches to
faust-streaming and aiokafka (`faust_patches`). The only layer that imports faust; the rules it
applies live in streams.domain, the wire format in streams.contract (docs/architecture.md)."""
