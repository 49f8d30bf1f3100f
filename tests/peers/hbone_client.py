#!/usr/bin/env python3
"""An HBONE client that weft did not write: Python's ssl module and the h2
package (PyPI). It opens TLS 1.3 to --addr with a workload certificate,
checks that the server presents --server-id (a SPIFFE URI SAN), opens one
HTTP/2 CONNECT stream to --target, sends an HTTP/1.1 GET through it and
prints what comes back. Exits 0 when the tunnel answered 200 and the
request got an HTTP response; 1 otherwise, saying why on stderr."""

import argparse
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def fail(message):
    print(f"hbone_client: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="HBONE server, ip:15008")
    parser.add_argument("--target", required=True, help="CONNECT target, ip:port")
    parser.add_argument("--cert", required=True, help="workload certificate, PEM")
    parser.add_argument("--key", required=True, help="its key, PEM")
    parser.add_argument("--ca", required=True, help="trust bundle, PEM")
    parser.add_argument("--server-id", required=True, help="expected server SPIFFE ID")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # HBONE peers are named by SPIFFE URI, not DNS: checked below.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])

    host, port = args.addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=None)
    uris = [v for (k, v) in tls.getpeercert().get("subjectAltName", ()) if k == "URI"]
    if uris != [args.server_id]:
        fail(f"the server presented {uris}, not {args.server_id}")
    print(f"tls: {tls.version()}, alpn {tls.selected_alpn_protocol()}, server {uris[0]}")

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "CONNECT"), (":authority", args.target)])
    tls.sendall(conn.data_to_send())

    status = None
    body = b""
    done = False
    while not done:
        data = tls.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(":status")
                print(f"connect: {status}")
                if status != "200":
                    fail(f"CONNECT {args.target} answered {status}")
                request = f"GET / HTTP/1.1\r\nHost: {args.target}\r\nConnection: close\r\n\r\n"
                conn.send_data(stream, request.encode())
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                done = True
        tls.sendall(conn.data_to_send())
    tls.close()

    if status != "200":
        fail("no answer to CONNECT")
    text = body.decode(errors="replace")
    print(text)
    if not text.startswith("HTTP/1.1 "):
        fail("no HTTP response came through the tunnel")


if __name__ == "__main__":
    main()
