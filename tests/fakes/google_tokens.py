"""A stand-in for Google's ID token issuer: an RSA key, its certificate published as Google
publishes them (`{"kid": "PEM"}` at a URL), and tokens signed with it by google-auth's own signer."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from fakes.stand_in_http import StandInHandler, serving


class TokenIssuer:
    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.certs = {kid: cert.public_bytes(serialization.Encoding.PEM).decode()}
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id=kid)
        self.fetched = 0

    def mint(
        self,
        email: str,
        audience: str,
        *,
        expires_in_s: int = 3600,
        issuer: str = "https://accounts.google.com",
        verified: bool = True,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer,
            "aud": audience,
            "sub": "1234567890",
            "email": email,
            "email_verified": verified,
            "iat": now - 10,
            "exp": now + expires_in_s,
        }
        return jwt.encode(self.signer, payload).decode()


@contextmanager
def serving_certs(issuer: TokenIssuer) -> Iterator[str]:
    """Publish the issuer's certificates; yields their URL."""

    class Handler(StandInHandler):
        def do_GET(self) -> None:  # noqa: N802
            issuer.fetched += 1
            self.reply_json(200, issuer.certs)

    with serving(Handler) as url:
        yield url + "/oauth2/v1/certs"
