#!/usr/bin/env python3
"""Checks weft's subsets of Envoy's protos against Envoy's own.

weft keeps the Envoy messages it uses in `proto/proto/envoy/` with the
fields it needs; the numbers, types and enum values of those kept must be
upstream's. This compiles weft's files with `grpcio-tools`' protoc and
compares every field and enum value with the descriptors of the
`xds-protos` package (Envoy's API, compiled by the gRPC project), by
name. Run it after changing a file there:

    python3 -m venv /tmp/protos && /tmp/protos/bin/pip install xds-protos grpcio-tools
    /tmp/protos/bin/python proto/tools/check_upstream.py

It prints each difference and exits 1 if there is one.
"""

import os
import subprocess
import sys
import tempfile

import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool

# Importing them registers Envoy's descriptors in the default pool.
import envoy.config.core.v3.address_pb2  # noqa: F401
import envoy.config.core.v3.base_pb2  # noqa: F401
import envoy.data.accesslog.v3.accesslog_pb2  # noqa: F401
import envoy.service.accesslog.v3.als_pb2  # noqa: F401
import envoy.service.auth.v3.external_auth_pb2  # noqa: F401
import envoy.service.discovery.v3.ads_pb2  # noqa: F401

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
FILES = [
    "envoy/service/accesslog/v3/als.proto",
    "envoy/service/auth/v3/external_auth.proto",
    "envoy/service/discovery/v3/ads.proto",
]


def ours():
    with tempfile.NamedTemporaryFile(suffix=".pb") as out:
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"-I{include}",
             "--include_imports", f"--descriptor_set_out={out.name}", *FILES],
            check=True,
        )
        files = descriptor_pb2.FileDescriptorSet()
        files.ParseFromString(out.read())
        return files


def main():
    pool = descriptor_pool.Default()
    differences = []
    checked = 0

    def enum(full, values):
        nonlocal checked
        upstream = pool.FindEnumTypeByName(full)
        for v in values:
            checked += 1
            theirs = upstream.values_by_name.get(v.name)
            if theirs is None or theirs.number != v.number:
                differences.append(f"{full}.{v.name} = {v.number}: upstream has "
                                   f"{theirs.number if theirs else 'no such value'}")

    def messages(prefix, types):
        nonlocal checked
        for m in types:
            full = f"{prefix}.{m.name}"
            try:
                upstream = pool.FindMessageTypeByName(full)
            except KeyError:
                differences.append(f"{full}: upstream has no such message")
                continue
            for f in m.field:
                checked += 1
                theirs = upstream.fields_by_name.get(f.name)
                if theirs is None:
                    differences.append(f"{full}.{f.name}: upstream has no such field")
                    continue
                kind = theirs.message_type or theirs.enum_type
                kind = kind.full_name if kind else None
                if (theirs.number, theirs.type, kind) != (f.number, f.type, f.type_name.lstrip(".") or None):
                    differences.append(f"{full}.{f.name} = {f.number} ({f.type_name or f.type}): "
                                       f"upstream {theirs.number} ({kind or theirs.type})")
            messages(full, m.nested_type)
            for e in m.enum_type:
                enum(f"{full}.{e.name}", e.value)

    for file in ours().file:
        if not file.package.startswith("envoy."):
            continue
        messages(file.package, file.message_type)
        for e in file.enum_type:
            enum(f"{file.package}.{e.name}", e.value)
    for d in differences:
        print(d)
    print(f"{checked} fields and enum values checked, {len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
