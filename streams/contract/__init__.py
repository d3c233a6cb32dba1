"""The wire: decoding and validating input records against schemas/ (`codec`), the typed record
classes (`records`), the dead-letter record and the join's internal link record (`internal`).
Imports streams.domain only (docs/architecture.md)."""
