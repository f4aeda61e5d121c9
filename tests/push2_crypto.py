#!/usr/bin/env python3
"""The user's server and the browser of the Web Push tests, with an RFC 8291 implementation
independent of fpush (PyPI http_ece) and VAPID (RFC 8292) tokens signed with `cryptography`.

  push2_crypto.py encrypt TEXT   -> JSON: the subscription's keys, the encrypted payload
                                    (standard base64, as push2 sends it), a VAPID token and its
                                    key in standard base64 containing both '+' and '/'
  push2_crypto.py decrypt        <- JSON {body_hex, ua_private, auth} on stdin -> the plaintext
"""

import base64
import json
import os
import sys
import time

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_point(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def vapid_key():
    """A VAPID key whose standard base64 has both '+' and '/', to test the re-encoding."""
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        text = base64.b64encode(public_point(key)).decode()
        if "+" in text and "/" in text:
            return key, text


def vapid_token(key, audience: str) -> str:
    header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    claims = {"aud": audience, "exp": int(time.time()) + 3600, "sub": "mailto:ops@example.org"}
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def encrypt(text: str, audience: str) -> dict:
    ua_private = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    body = http_ece.encrypt(
        text.encode(),
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=public_point(ua_private),
        auth_secret=auth,
        version="aes128gcm",
    )
    key, key_text = vapid_key()
    ua_der = ua_private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "payload": base64.b64encode(body).decode(),
        "jwt": vapid_token(key, audience),
        "key": key_text,
        "ua_private": base64.b64encode(ua_der).decode(),
        "auth": base64.b64encode(auth).decode(),
    }


def decrypt(request: dict) -> str:
    ua_private = serialization.load_der_private_key(
        base64.b64decode(request["ua_private"]), password=None
    )
    plain = http_ece.decrypt(
        bytes.fromhex(request["body_hex"]),
        private_key=ua_private,
        auth_secret=base64.b64decode(request["auth"]),
        version="aes128gcm",
    )
    return plain.decode()


if __name__ == "__main__":
    if sys.argv[1] == "encrypt":
        print(json.dumps(encrypt(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "https://localhost")))
    else:
        print(decrypt(json.load(sys.stdin)), end="")
