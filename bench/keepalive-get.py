#!/usr/bin/env python3
"""Send exactly N GET requests, one after another, on one keep-alive HTTP/1.1 connection to
127.0.0.1, and check that every answer is 200 and that the connection stays open. Used by
bench/instructions.sh, where the server runs under valgrind (hence the long per-request timeout).

    keepalive-get.py PORT PATH N [NAME:VALUE ...]

The request bytes are those wrk sends: "GET PATH HTTP/1.1", Host, then the given headers.
Prints "N requests, N x 200, 1 connection" and exits 0, or explains and exits 1.
"""

import http.client
import socket
import sys


class OneConnection(http.client.HTTPConnection):
    """An HTTPConnection that refuses to open a second connection (http.client would silently
    reconnect when the server closes the first)."""

    connects = 0

    def connect(self):
        OneConnection.connects += 1
        if OneConnection.connects > 1:
            raise RuntimeError("the server closed the keep-alive connection")
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main(argv):
    if len(argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    port, path, n = int(argv[1]), argv[2], int(argv[3])
    headers = []
    for h in argv[4:]:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    conn = OneConnection("127.0.0.1", port, timeout=120)
    ok = 0
    try:
        for i in range(n):
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"127.0.0.1:{port}")
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                print(f"request {i + 1}: status {resp.status}, not 200", file=sys.stderr)
                return 1
            if resp.will_close:
                print(f"request {i + 1}: the server closes the connection", file=sys.stderr)
                return 1
            ok += 1
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        print(f"request {ok + 1} of {n}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"{n} requests, {ok} x 200, {OneConnection.connects} connection")
    return 0 if ok == n and OneConnection.connects == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
