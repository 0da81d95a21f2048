"""Pipelined requests on one TLS connection: several requests in one TLS
record, several records in one TCP segment (what OpenSSL's read-ahead
holds after one read), and a usage POST with its body between GETs. Every
request is answered, in order, without the client sending more."""
import json
import socket
import ssl

from lp import Fixture, Pki, Server
from test_slow_clients import RECORD, read_response

GET = ("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
       "Authorization: Token %s\r\n\r\n")


def server(fx):
    pki = fx.add(Pki("pipe"))
    return fx.add(Server(pki, "authority", workers=1))


def records_conn(srv):
    """A TLS connection driven by memory BIOs: (socket, SSLObject, out)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = srv.pki.context().wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            s.sendall(out.read())
            b = s.recv(65536)
            assert b, "closed in the handshake"
            inc.write(b)
    s.sendall(out.read())
    return s, obj, inc, out


def read_records(s, obj, inc, n):
    """n responses' status codes from the memory-BIO connection."""
    buf, codes = b"", []
    while len(codes) < n:
        try:
            buf += obj.read(65536)
        except ssl.SSLWantReadError:
            b = s.recv(65536)
            assert b, ("closed after %d of %d" % (len(codes), n), buf)
            inc.write(b)
            continue
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for ln in head.split(b"\r\n")[1:]:
                k, v = ln.split(b":", 1)
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if len(rest) < length:
                break
            codes.append(int(head.split()[1]))
            buf = rest[length:]
    return codes


def test_requests_in_one_record():
    with Fixture() as fx:
        srv = server(fx)
        key = srv.create_key()
        srv.start()
        s = srv.pki.context().wrap_socket(
            socket.create_connection(("127.0.0.1", srv.port), timeout=10),
            server_hostname="localhost")
        body = json.dumps({"records": [RECORD]})
        post = ("POST /v1/usage HTTP/1.1\r\nHost: localhost\r\n"
                "Authorization: Token %s\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n%s" % (key, len(body), body))
        s.sendall(((GET % key) * 2 + post + GET % key).encode())
        codes = [read_response(s)[0] for _ in range(4)]
        assert codes == [200, 200, 202, 200], codes
        s.close()
        assert srv.stop() == 0


def test_records_in_one_segment():
    """Three TLS records written to the socket at once: one read(2) with
    read-ahead takes them all, and none may wait inside OpenSSL."""
    with Fixture() as fx:
        srv = server(fx)
        key = srv.create_key()
        srv.start()
        s, obj, inc, out = records_conn(srv)
        for _ in range(3):
            obj.write((GET % key).encode())
        s.sendall(out.read())
        assert read_records(s, obj, inc, 3) == [200, 200, 200]
        # And again on the same connection, after it went idle.
        for _ in range(5):
            obj.write((GET % key).encode())
        s.sendall(out.read())
        assert read_records(s, obj, inc, 5) == [200] * 5
        s.close()
        assert srv.stop() == 0
