"""The partition a key belongs on: Kafka's default partitioner (murmur2), checked against the Java
client's own test vectors and against the Python clients the producers use."""
import zlib

from hypothesis import given, strategies as st

from streams.domain.partitioning import murmur2, partition_for

#: org.apache.kafka.common.utils.UtilsTest.testMurmur2 (the Java client), plus the empty key.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"": 275646681,
}


def test_murmur2_is_the_java_clients():
    assert {data: murmur2(data) for data in JAVA_VECTORS} == JAVA_VECTORS


def test_partition_is_the_positive_hash_modulo_the_count():
    # toPositive(-790332482) = -790332482 & 0x7fffffff = 1357151166; 1357151166 % 50 = 16
    assert partition_for(b"foobar", 50) == 16
    assert partition_for(b"foobar", 4) == 1357151166 % 4 == 2
    assert partition_for(b"abc", 7) == 479470107 % 7
    assert all(partition_for(b"anything", 1) == 0 for _ in range(3))


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 64))
def test_the_same_partition_as_aiokafka_and_kafka_python(key, partitions):
    """What the producers that follow the README do by default (and the worker's own sends)."""
    from aiokafka.partitioner import DefaultPartitioner as AioKafkaPartitioner
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2
    every = list(range(partitions))
    assert partition_for(key, partitions) == AioKafkaPartitioner()(key, every, every)
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)       # it returns it unsigned


def test_librdkafkas_default_partitioner_puts_most_keys_elsewhere():
    """librdkafka's `consistent_random` is CRC32 of the key modulo the count (for a non-empty key):
    with 4 partitions about 3 shipment ids in 4 land on another partition than murmur2's."""
    keys = [f"SHP-11-{i:06d}".encode() for i in range(1000)]
    elsewhere = sum(zlib.crc32(k) % 4 != partition_for(k, 4) for k in keys)
    assert 650 < elsewhere < 850
