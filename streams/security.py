"""TLS and SASL to the brokers, from Settings: the SSL context and kafka-python client options (the
worker builds Faust's credentials from the same context, streams.worker.app.faust_credentials).

Secrets come from the environment or mounted files (streams/settings.py) and are never logged:
Faust's SASLCredentials repr shows the username only.
"""
from __future__ import annotations

import ssl

from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None,
                            password=settings.ssl_key_password or None)
    return ctx


def kafka_python_options(settings: Settings) -> dict:
    """Keyword arguments for kafka-python clients (admin, producer) used by the CLI tools."""
    opts: dict = {"security_protocol": settings.security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if settings.security_protocol.startswith("SASL"):
        opts.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                    sasl_plain_password=settings.sasl_password)
    return opts
