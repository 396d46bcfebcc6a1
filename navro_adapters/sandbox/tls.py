"""HTTPS for the sandbox: a throwaway CA made with trustme, and the ``ssl`` contexts using it.

:class:`TlsFiles` generates, once per sandbox, a CA, a server certificate for ``127.0.0.1``,
``localhost`` and ``::1`` (plus the bind host), and optionally a client certificate for mutual
TLS, all as PEM files in a private temporary directory that :meth:`TlsFiles.close` removes.
Contexts are built from those files with the standard library alone, so a server in a child
process loads them without importing trustme. Only generating needs trustme (the ``[sandbox]``
extra); importing this module does not.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["TRUSTME_MISSING", "TlsFiles", "require_trustme", "server_context"]

TRUSTME_MISSING = "HTTPS in the Navro sandbox needs trustme: pip install 'navro-adapters[sandbox]'"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CLIENT_IDENTITY = "client@navro-sandbox.invalid"  # .invalid: a name that can never resolve
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def require_trustme() -> None:
    """Raise ImportError naming the extra when trustme cannot be imported."""
    try:
        import trustme  # noqa: F401
    except ImportError as exc:
        raise ImportError(TRUSTME_MISSING, name="trustme") from exc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one sandbox's CA and certificates, in a directory of their own.

    ``server_file`` holds the server's key and certificate; ``client_cert_file`` and
    ``client_key_file`` are set only when generated with ``client_cert=True``.
    """

    directory: str
    ca_file: str
    server_file: str
    client_cert_file: Optional[str] = None
    client_key_file: Optional[str] = None

    @classmethod
    def generate(cls, host: str = "127.0.0.1", *, client_cert: bool = False) -> TlsFiles:
        """A new CA and its certificates; the server's also names ``host`` unless a wildcard."""
        require_trustme()
        import trustme

        identities = list(LOOPBACK_NAMES)
        if host not in _WILDCARD_HOSTS and host not in identities:
            identities.append(host)
        ca = trustme.CA(organization_name="navro-adapters sandbox")
        directory = tempfile.mkdtemp(prefix="navro-sandbox-tls-")  # mode 0700: keys stay ours
        try:
            files = cls(
                directory,
                os.path.join(directory, "ca.pem"),
                os.path.join(directory, "server.pem"),
                os.path.join(directory, "client.pem") if client_cert else None,
                os.path.join(directory, "client-key.pem") if client_cert else None,
            )
            ca.cert_pem.write_to_path(files.ca_file)
            server = ca.issue_cert(*identities, common_name="navro-sandbox")
            server.private_key_and_cert_chain_pem.write_to_path(files.server_file)
            if files.client_cert_file is not None and files.client_key_file is not None:
                client = ca.issue_cert(CLIENT_IDENTITY, common_name="navro-sandbox-client")
                for index, blob in enumerate(client.cert_chain_pems):
                    blob.write_to_path(files.client_cert_file, append=index > 0)
                client.private_key_pem.write_to_path(files.client_key_file)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return files

    @property
    def client_cert(self) -> Optional[Tuple[str, str]]:
        """``(cert_file, key_file)`` of the client certificate, or None."""
        if self.client_cert_file is None or self.client_key_file is None:
            return None
        return self.client_cert_file, self.client_key_file

    def server_context(self, require_client_cert: bool) -> ssl.SSLContext:
        return server_context(self.server_file, self.ca_file, require_client_cert)

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA, presenting the client certificate if any."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file is not None:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context

    def close(self) -> None:
        """Remove the directory and every file in it. Idempotent."""
        shutil.rmtree(self.directory, ignore_errors=True)


def server_context(server_file: str, ca_file: str, require_client_cert: bool) -> ssl.SSLContext:
    """The server side: TLS 1.2 or later, HTTP/1.1 by ALPN, and, with ``require_client_cert``,
    a handshake that fails unless the client presents a certificate issued by ``ca_file``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_file)
    context.set_alpn_protocols(["http/1.1"])  # a client offering h2 learns it gets HTTP/1.1
    if require_client_cert:
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
