#!/usr/bin/env python3
"""Makes the binary and signed seeds of weft's fuzz targets.

Run from the repository's top directory:

    python3 fuzz/seed_sources/make_seeds.py xds   # needs protoc
    python3 fuzz/seed_sources/make_seeds.py jwt   # needs python3-cryptography
    python3 fuzz/seed_sources/make_seeds.py sni

* xds: each `xds/*.txtpb` (protobuf text format) is encoded with `protoc
  --encode`, written as a one-resource seed (a first byte naming the type,
  see fuzz/fuzz_targets/xds.rs) and framed into whole
  DeltaDiscoveryResponses.
* jwt: new RSA, P-256 and Ed25519 keys; their JWKS replaces
  fuzz/fuzz_targets/jwt_keys.json and the tokens of the seeds are signed
  with them (the two must change together).
* sni: TLS ClientHellos for the `http` target.

The text seeds (YAML, CNI, HBONE heads, HTTP parsers) are written by hand.
"""

import base64
import json
import os
import struct
import subprocess
import sys

CORPUS = "fuzz/corpus"
PROTO = "proto/proto"

TYPES = {
    "istio.workload.Address": (0, "istio/workload/workload.proto"),
    "istio.security.Authorization": (1, "istio/security/authorization.proto"),
    "weft.route.v1.RouteConfig": (2, "weft/route/v1/route.proto"),
    "weft.route.v1.DestinationPolicy": (3, "weft/route/v1/destination.proto"),
    "weft.telemetry.v1.AccessLogPolicy": (4, "weft/telemetry/v1/access_log.proto"),
    "weft.telemetry.v1.TracingPolicy": (5, "weft/telemetry/v1/tracing.proto"),
}

# Seed file → (message, resource name).
XDS = {
    "workload": ("istio.workload.Address", "Kubernetes//Pod/default/web-1"),
    "service": ("istio.workload.Address", "default/web.default.svc.cluster.local"),
    "authz": ("istio.security.Authorization", "default/allow-web"),
    "deny": ("istio.security.Authorization", "istio-system/deny-admin"),
    "route": ("weft.route.v1.RouteConfig", "default/reviews.default.svc.cluster.local"),
    "destination": ("weft.route.v1.DestinationPolicy", "default/reviews.default.svc.cluster.local"),
    "accesslog": ("weft.telemetry.v1.AccessLogPolicy", "istio-system"),
    "tracing": ("weft.telemetry.v1.TracingPolicy", "istio-system"),
}


def varint(n):
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])


def field(number, data):
    """A length-delimited field."""
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def resource(name, message, body):
    any_ = field(1, "type.googleapis.com/" + message) + field(2, body)
    return field(2, field(1, "v1") + field(3, name) + field(2, any_))


def response(message, resources, removed=()):
    """A DeltaDiscoveryResponse: resources 2, type_url 4, nonce 5, removed 6."""
    out = field(1, "seed") + b"".join(resources)
    out += field(4, "type.googleapis.com/" + message) + field(5, "n1")
    return out + b"".join(field(6, r) for r in removed)


def xds():
    out = os.path.join(CORPUS, "xds")
    bodies = {}
    for seed, (message, name) in XDS.items():
        with open(f"fuzz/seed_sources/xds/{seed}.txtpb", "rb") as text:
            body = subprocess.run(
                ["protoc", "-I", PROTO, "-I", "/usr/include", f"--encode={message}", TYPES[message][1]],
                stdin=text, capture_output=True, check=True,
            ).stdout
        bodies[seed] = body
        with open(os.path.join(out, f"one-{seed}"), "wb") as f:
            f.write(bytes([TYPES[message][0]]) + body)
    by_message = {}
    for seed, (message, name) in XDS.items():
        by_message.setdefault(message, []).append(resource(name, message, bodies[seed]))
    for message, resources in by_message.items():
        short = message.rsplit(".", 1)[1].lower()
        with open(os.path.join(out, f"response-{short}"), "wb") as f:
            f.write(b"\xff" + response(message, resources, removed=["default/gone"]))


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    n = rsa_key.public_key().public_numbers()
    p = ec_key.public_key().public_numbers()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    big = lambda v, size=None: v.to_bytes(size or (v.bit_length() + 7) // 8, "big")
    jwks = {"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64(big(n.n)), "e": b64(big(n.e))},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(big(p.x, 32)), "y": b64(big(p.y, 32))},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(ed_key.public_key().public_bytes(*raw))},
    ]}
    jwks_text = json.dumps(jwks, separators=(",", ":"))
    with open("fuzz/fuzz_targets/jwt_keys.json", "w") as f:
        f.write(jwks_text)

    def sign(alg, kid, claims):
        header = {"alg": alg, "typ": "JWT", "kid": kid}
        signed = ".".join(b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
        data = signed.encode()
        if alg == "RS256":
            sig = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            sig = rsa_key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        elif alg == "ES256":
            r, s = utils.decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = big(r, 32) + big(s, 32)
        else:
            sig = ed_key.sign(data)
        return signed + "." + b64(sig)

    iss = "https://issuer.example.com"
    claims = {"iss": iss, "sub": "alice", "aud": ["web", "https://api.example.com/"], "iat": 1700000000,
              "exp": 4000000000, "nbf": 1600000000, "groups": ["dev", "ops"], "scope": "read write",
              "nested": {"team": "payments", "level": 3}}
    t = {
        "rs256": sign("RS256", "rsa-1", claims),
        "ps256": sign("PS256", "rsa-1", dict(claims, sub="bob")),
        "es256": sign("ES256", "ec-1", dict(claims, azp="cli")),
        "eddsa": sign("EdDSA", "ed-1", {"iss": iss, "sub": "carol", "aud": "web"}),
        "expired": sign("ES256", "ec-1", dict(claims, exp=1600000001)),
        "nokid": sign("RS256", None, claims),
    }
    seeds = {
        "bearer-rs256": f"GET /api/items?x=1\nhost: web.default\nauthorization: Bearer {t['rs256']}\nx-jwt-sub: forged\n",
        "bearer-ps256": f"GET /\nauthorization: Bearer {t['ps256']}\n",
        "bearer-es256": f"POST /orders\nauthorization: Bearer {t['es256']}\nx-jwt-payload: forged\n",
        "param-eddsa": f"GET /reviews?access_token={t['eddsa']}&page=2\n",
        "expired": f"GET /\nauthorization: Bearer {t['expired']}\n",
        "null-kid": f"GET /\nauthorization: Bearer {t['nokid']}\n",
        "two-tokens": f"GET /?token={t['es256']}\nauthorization: Bearer {t['rs256']}\nx-token: {t['eddsa']}\n"
                      f"cookie: a=b; session={t['ps256']}\n\n{jwks_text}",
        "cookie-extra-jwks": f"GET /\ncookie: session={t['eddsa']}\n\n{jwks_text}",
    }
    for name, text in seeds.items():
        with open(os.path.join(CORPUS, "jwt", name), "w") as f:
            f.write(text)


def sni():
    def ext(kind, data):
        return struct.pack(">HH", kind, len(data)) + data

    def hello(name):
        exts = b""
        if name is not None:
            entry = struct.pack(">BH", 0, len(name)) + name.encode()
            exts += ext(0, struct.pack(">H", len(entry)) + entry)
        exts += ext(0x002B, b"\x02\x03\x04")
        body = (b"\x03\x03" + bytes(32) + b"\x20" + bytes(32) + struct.pack(">H", 4) + b"\x13\x01\x13\x02"
                + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
        handshake = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake

    out = os.path.join(CORPUS, "http")
    for name, data in {
        "sni-hello": hello("Reviews.Default.svc.cluster.local"),
        "sni-none": hello(None),
        "sni-truncated": hello("web.example.com")[:60],
    }.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"sni\n" + data)


if __name__ == "__main__":
    for what in sys.argv[1:] or ["xds", "jwt", "sni"]:
        {"xds": xds, "jwt": jwt, "sni": sni}[what]()
