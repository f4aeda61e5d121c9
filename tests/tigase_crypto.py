"""Encrypts a push payload as a Tigase-style XMPP server does, for tests/tigase_path.rs.

AES-128-GCM with Python's `cryptography` (an implementation independent of fpush): prints one
JSON line with the base64 ciphertext (tag appended, as the apps expect), the base64 iv, and the
base64 key, so the test can check the ciphertext reached the APNS test server unchanged and
still decrypts.

Usage: tigase_crypto.py encrypt PLAINTEXT | tigase_crypto.py decrypt KEY IV CIPHERTEXT
"""

import base64
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def encrypt(plaintext: str) -> dict:
    key = AESGCM.generate_key(bit_length=128)
    iv = os.urandom(12)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode(), None)
    encode = lambda raw: base64.b64encode(raw).decode()
    return {"key": encode(key), "iv": encode(iv), "encrypted": encode(sealed)}


def decrypt(key: str, iv: str, sealed: str) -> str:
    decode = base64.b64decode
    return AESGCM(decode(key)).decrypt(decode(iv), decode(sealed), None).decode()


if __name__ == "__main__":
    if sys.argv[1] == "encrypt":
        print(json.dumps(encrypt(sys.argv[2])))
    else:
        print(decrypt(sys.argv[2], sys.argv[3], sys.argv[4]))
