"""TLS for the device gateway: server certificate, CA file, client-certificate checks.

The server certificate is issued by the emulator's CA (``fixes/_ca.py``, the
CA that signs every device certificate the emulator issues), with SANs DNS
``localhost``, the DescribeEndpoint hostname of the gateway's account/region,
and IP ``127.0.0.1``.  The CA's PEM is written to ``ca.pem`` in a private
temporary directory (mode 0700), removed when the gateway stops.

Client certificates are verified by OpenSSL during the handshake against the
emulator CA, plus a certificate revocation list signed by that CA which lists
every device certificate the CA issued that is *not* currently registered and
ACTIVE in moto's IoT backend (INACTIVE, REVOKED, PENDING_TRANSFER, deleted,
or registered only in another account/region).  So such a certificate, like a
certificate from any other CA, fails the TLS handshake with an alert
(``certificate revoked`` / ``unknown ca``), as AWS fails the TLS negotiation
for a deactivated or unknown certificate.  The CRL is rebuilt when that set
changes (the context is cached per set), so a status change counts from the
next connection.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import threading


class TlsMaterial:
    def __init__(self, dns_names: list[str], ip_addresses: list[str], active_ids) -> None:
        """``active_ids()`` -> set of certificate ids that are registered and ACTIVE."""
        from fixes import _ca

        self._ca = _ca
        self._active_ids = active_ids
        self.directory = tempfile.mkdtemp(prefix="iotreg-gateway-")
        os.chmod(self.directory, 0o700)
        key_pem, cert_pem = _ca.issue_server(dns_names, ip_addresses)
        self.ca_pem = _ca.ca_certificate_pem()
        self.ca_file = os.path.join(self.directory, "ca.pem")
        self.cert_file = os.path.join(self.directory, "server.pem")
        self.key_file = os.path.join(self.directory, "server.key")
        for path, text in ((self.ca_file, self.ca_pem), (self.cert_file, cert_pem), (self.key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        os.chmod(self.ca_file, 0o644)
        self._lock = threading.Lock()
        self._cache: dict[tuple, tuple[frozenset, ssl.SSLContext]] = {}
        self._generation = 0

    def revoked_serials(self) -> frozenset:
        active = self._active_ids()
        return frozenset(serial for serial, cert_id in self._ca.issued().items() if cert_id not in active)

    def context(self, require_cert: bool, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server context whose CRL reflects the registry right now."""
        revoked = self.revoked_serials()
        key = (require_cert, alpn)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == revoked:
                return cached[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        # cadata= loads certificates only; a file given as cafile= may also
        # hold CRLs (OpenSSL's X509_LOOKUP_load_file).
        with self._lock:
            self._generation += 1
            bundle = os.path.join(self.directory, f"verify-{self._generation}.pem")
        with open(bundle, "w") as handle:
            handle.write(self.ca_pem + self._ca.crl_pem(revoked))
        try:
            ctx.load_verify_locations(cafile=bundle)
        finally:
            os.unlink(bundle)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        ctx.verify_mode = ssl.CERT_REQUIRED if require_cert else ssl.CERT_OPTIONAL
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        with self._lock:
            self._cache[key] = (revoked, ctx)
        return ctx

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# -- server-side TLS on an accepted transport, with the failure alert sent ----------

try:
    from asyncio import sslproto as _sslproto

    class _AlertingSSLProtocol(_sslproto.SSLProtocol):
        """asyncio's SSLProtocol, but a failed handshake still sends OpenSSL's alert.

        CPython's SSLProtocol (3.11) aborts the connection on a handshake
        error without writing what OpenSSL queued, so the client would see a
        bare close instead of ``certificate revoked`` / ``unknown ca``."""

        alpn = None  # the ALPN protocol the server chose, also when the handshake failed

        def _on_handshake_complete(self, handshake_exc):
            try:
                # Chosen from the ClientHello, before the client's certificate is checked:
                # which protocol a refused client meant to speak (its metrics' Protocol).
                self.alpn = self._sslobj.selected_alpn_protocol()
            except Exception:  # noqa: BLE001 - best effort
                pass
            if handshake_exc is not None:
                try:
                    self._process_outgoing()
                except Exception:  # noqa: BLE001 - best effort
                    pass
            super()._on_handshake_complete(handshake_exc)

except (ImportError, AttributeError):  # pragma: no cover - another Python
    _AlertingSSLProtocol = None


async def start_tls_server(loop, transport, protocol, context: ssl.SSLContext, timeout: float):
    """``loop.start_tls(..., server_side=True)`` that sends the alert on failure."""
    if _AlertingSSLProtocol is None or not hasattr(_AlertingSSLProtocol, "_process_outgoing"):
        return await loop.start_tls(transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout)
    waiter = loop.create_future()
    ssl_protocol = _AlertingSSLProtocol(
        loop, protocol, context, waiter, server_side=True,
        call_connection_made=False, ssl_handshake_timeout=timeout,
    )
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    made = loop.call_soon(ssl_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException as error:
        transport.close()
        made.cancel()
        resumed.cancel()
        try:
            error.iotreg_alpn = ssl_protocol.alpn
        except Exception:  # noqa: BLE001 - an exception type without attributes
            pass
        raise
    return ssl_protocol._app_transport
