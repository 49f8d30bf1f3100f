#!/usr/bin/env python3
"""An HBONE server that weft did not write: Python's ssl module and the h2
package (PyPI). It listens on --listen with a workload certificate,
requires a client certificate from the mesh's CA, and answers every HTTP/2
CONNECT stream with 200, then answers the HTTP/1.1 request that comes
through the tunnel itself, naming what it saw: the client's SPIFFE ID, the
CONNECT authority and the `forwarded` header. One line per stream on
stdout. Runs until killed."""

import argparse
import socket
import ssl
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve(tls, peer):
    uris = [v for (k, v) in tls.getpeercert().get("subjectAltName", ()) if k == "URI"]
    client = uris[0] if uris else "(none)"
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    streams = {}
    while True:
        try:
            data = tls.recv(65536)
        except OSError:
            return
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                if headers.get(":method") != "CONNECT":
                    conn.send_headers(event.stream_id, [(":status", "405")], end_stream=True)
                    continue
                streams[event.stream_id] = {
                    "authority": headers.get(":authority", ""),
                    "forwarded": headers.get("forwarded", ""),
                    "request": b"",
                }
                conn.send_headers(event.stream_id, [(":status", "200")])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                stream = streams.get(event.stream_id)
                if stream is None:
                    continue
                stream["request"] += event.data
                if b"\r\n\r\n" in stream["request"] and not stream.get("answered"):
                    stream["answered"] = True
                    line = stream["request"].split(b"\r\n", 1)[0].decode(errors="replace")
                    body = (
                        f"hello from python to {client} authority={stream['authority']} "
                        f"forwarded={stream['forwarded']} request={line}\n"
                    )
                    print(f"stream: peer={peer[0]} {body.strip()}", flush=True)
                    response = (
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                    )
                    conn.send_data(event.stream_id, response.encode(), end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                tls.sendall(conn.data_to_send())
                return
        tls.sendall(conn.data_to_send())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="ip:15008")
    parser.add_argument("--cert", required=True, help="workload certificate, PEM")
    parser.add_argument("--key", required=True, help="its key, PEM")
    parser.add_argument("--ca", required=True, help="trust bundle, PEM")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])

    host, port = args.listen.rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    print(f"listening on {args.listen}", flush=True)
    while True:
        raw, peer = listener.accept()
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as error:
            print(f"handshake failed from {peer[0]}: {error}", file=sys.stderr, flush=True)
            raw.close()
            continue
        threading.Thread(target=serve, args=(tls, peer), daemon=True).start()


if __name__ == "__main__":
    main()
