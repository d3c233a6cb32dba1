"""Topic provisioning: every topic a corridor deployment uses, with its partitions, replication factor
and min.insync.replicas (CORRIDOR_PARTITIONS, CORRIDOR_REPLICATION_FACTOR, CORRIDOR_MIN_INSYNC_REPLICAS).

Two callers: the worker at start (`ensure_waiting`), and `corridor topics` (`main`), which a Kubernetes
Job or an operator runs before the workers (where clients may not create topics, it is the only
creator). Both create the internal, dead-letter, changelog and Faust assignor topics (Faust would
create the last two itself, with replication factor 1: on a cluster with min.insync.replicas=2 the
changelog writes then fail). The worker creates missing input topics too unless
CORRIDOR_CREATE_INPUT_TOPICS=false, in which case a missing input topic is one error (exit status 2).
"""
from __future__ import annotations

import argparse
import sys
import time

from streams.broker.embedded import BrokerError, BrokerUnreachable, create_topics
from streams.errors import CliError
from streams.settings import Settings
from streams.topics import all_topics, changelog_topics, faust_topics, topic_configs


def existing_partitions(settings: Settings, names) -> dict[str, int]:
    """name -> partition count of those of `names` that exist."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError
    from streams.security import kafka_python_options
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                 client_id="corridor-setup", request_timeout_ms=10000,
                                 bootstrap_timeout_ms=10000, **kafka_python_options(settings))
    except KafkaError as exc:
        raise BrokerUnreachable(f"cannot reach the broker at {settings.broker}: {exc}") from None
    try:
        present = [n for n in names if n in admin.list_topics()]
        # Ask only for ours, and never with an empty list: Tansu answers it with every topic.
        return {t.get("name") or t.get("topic"): len(t["partitions"])
                for t in (admin.describe_topics(present) if present else ())
                if (t.get("name") or t.get("topic")) in names}
    except KafkaError as exc:
        raise BrokerUnreachable(f"the broker at {settings.broker} did not answer: {exc}") from None
    finally:
        admin.close()


def ensure(settings: Settings, topics: dict[str, int], *, compact=frozenset(),
           create_inputs: bool = True) -> list[str]:
    """Create the missing ones of `topics`; refuse topics whose partition count breaks
    co-partitioning, and missing input topics when `create_inputs` is false. Returns the created."""
    from streams.security import kafka_python_options
    existing = existing_partitions(settings, topics)
    wrong = {n: c for n, c in existing.items() if c != topics[n]}
    if wrong:
        detail = ", ".join(f"{n} has {c}" for n, c in sorted(wrong.items()))
        raise BrokerError(f"every topic must have {settings.partitions} partitions to be joined "
                          f"(CORRIDOR_PARTITIONS), but {detail}")
    missing = {n: c for n, c in topics.items() if n not in existing}
    if not create_inputs:
        absent = [(kind, name) for kind, name in settings.input_topics.items() if name in missing]
        if absent:
            names = ", ".join(f"{name!r} (CORRIDOR_TOPIC_{_ENV[kind]})" for kind, name in absent)
            what = "input topic" if len(absent) == 1 else "input topics"
            verb = "does" if len(absent) == 1 else "do"
            raise BrokerError(f"{what} {names} {verb} not exist at {settings.broker} and "
                              "CORRIDOR_CREATE_INPUT_TOPICS=false: check the name, or provision "
                              "(corridor topics)")
    if not missing:
        return []
    return create_topics(settings.bootstrap_servers, missing, compact=set(compact) & set(missing),
                         client_options=kafka_python_options(settings),
                         replication_factor=settings.replication_factor,
                         configs=topic_configs(settings))


_ENV = {"orders": "ORDERS", "shipments": "SHIPMENTS", "customs": "CUSTOMS"}


def ensure_waiting(settings: Settings) -> list[str]:
    """The worker's start: `ensure` its topics, retried while the brokers cannot be reached (a
    broker restarting or stalled must not stop a worker from starting), for up to
    settings.broker_wait_seconds. Raises CliError (exit status 2) otherwise."""
    deadline = time.monotonic() + settings.broker_wait_seconds
    delay = 1.0
    while True:
        try:
            return ensure(settings, {**all_topics(settings), **faust_topics(settings)},
                          compact=changelog_topics(settings), create_inputs=settings.create_input_topics)
        except BrokerUnreachable as exc:
            if time.monotonic() + delay > deadline:
                raise CliError(f"{exc} (tried for {settings.broker_wait_seconds:.0f} s, "
                               "CORRIDOR_BROKER_WAIT_SECONDS)") from None
            print(f"corridor worker: {exc}; retrying in {delay:.0f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        except BrokerError as exc:
            raise CliError(str(exc)) from None


def plan(settings: Settings) -> list[tuple[str, int, str]]:
    """(topic, partitions, role) of every topic a deployment uses, inputs first."""
    internal = all_topics(settings)
    inputs = set(settings.input_topics.values())
    rows = [(n, c, "input" if n in inputs else "dead letters" if n.endswith(".dlq") else "internal")
            for n, c in internal.items()]
    changelogs = changelog_topics(settings)
    rows += [(n, c, "changelog (compacted)" if n in changelogs else "faust assignor")
             for n, c in faust_topics(settings).items()]
    return sorted(rows, key=lambda r: (r[2] != "input", r[0]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="create nothing: list each topic as present or missing; exit 1 if any is "
                             "missing, 2 if a partition count is wrong")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """`corridor topics`: create (or with --check, verify) every topic of the deployment."""
    rows = plan(settings)
    wanted = {n: c for n, c, _ in rows}
    try:
        if args.check:
            existing = existing_partitions(settings, wanted)
        else:
            compact = set(changelog_topics(settings))
            created = set(ensure(settings, wanted, compact=compact, create_inputs=True))
            existing = existing_partitions(settings, wanted)
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    rf = settings.replication_factor if settings.replication_factor > 0 else "broker default"
    isr = settings.min_insync_replicas or "broker default"
    print(f"{len(rows)} topics at {settings.broker} (partitions {settings.partitions}, replication "
          f"factor {rf}, min.insync.replicas {isr})")
    missing = wrong = 0
    for name, parts, role in rows:
        have = existing.get(name)
        if have is None:
            state, missing = "MISSING", missing + 1
        elif have != parts:
            state, wrong = f"WRONG: {have} partitions", wrong + 1
        elif not args.check and name in created:
            state = "created"
        else:
            state = "present"
        print(f"  {name:<48} {parts:>3}  {role:<22} {state}")
    if wrong:
        raise CliError(f"{wrong} topic(s) have the wrong partition count (CORRIDOR_PARTITIONS="
                       f"{settings.partitions})")
    return 1 if missing else 0
