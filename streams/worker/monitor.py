"""`OffsetsMonitor`: the faust sensor corridor installs (offsets only, no per-message timing)."""
from __future__ import annotations

from faust.sensors import Monitor


class OffsetsMonitor(Monitor):
    """Faust's monitor, keeping only what corridor reads: the read, end and committed offsets per
    topic partition (consumer lag, watermarks). The stock monitor also times every message,
    stream event, table access and send, for figures nothing here exports."""

    def on_message_in(self, tp, offset, message) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp, offset, stream, event):
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass

    def on_table_get(self, table, key) -> None:
        pass

    def on_table_set(self, table, key, value) -> None:
        pass

    def on_table_del(self, table, key) -> None:
        pass

    def on_send_initiated(self, producer, topic, message, keysize, valsize):
        return None

    def on_send_completed(self, producer, state, metadata) -> None:
        pass
