#!/usr/bin/env python3
"""bench/kernel.sh's client, run inside a lab Pod's namespace through `portico lab exec`
(it sends only to the lab address it is given).

  probe.py wait ADDR PORT [--write FILE --from SRC] [--deadline S]
      Fresh TCP connections to ADDR:PORT, one after the other (each given 20 ms), until one
      connects and its HTTP GET is answered by an echo Pod. With --write, first copies SRC to
      FILE (one write) and starts the clock there. Prints one line:
      "WRITE_EPOCH OK_EPOCH ATTEMPTS" (WRITE_EPOCH is 0 without --write). Exits 1 at the
      deadline (default 60 s).
  probe.py latency ADDR PORT N
      After 50 warm-up connections, N fresh TCP connections one after the other, each timed
      from connect() to connected (SYN to SYN-ACK handled), then reset (SO_LINGER 0, so that
      no TIME_WAIT builds up). Prints each connect time in microseconds, one a line.

Standard library only.
"""

import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def answered(addr, port, timeout):
    """True when a connection opens and an echo Pod answers a GET on it."""
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        s.settimeout(2.0)
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return b'"pod"' in data
    except OSError:
        return False
    finally:
        s.close()


def wait(argv):
    addr, port = argv[0], int(argv[1])
    opts = dict(zip(argv[2::2], argv[3::2]))
    deadline = float(opts.get("--deadline", "60"))
    written = 0.0
    if "--write" in opts:
        with open(opts["--from"], "rb") as f:
            text = f.read()
        written = time.time()
        with open(opts["--write"], "wb") as f:
            f.write(text)
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        t = time.time()
        if answered(addr, port, 0.02):
            print(f"{written:.6f} {t:.6f} {attempts}")
            return 0
        if time.monotonic() - start > deadline:
            print(f"no answer from {addr}:{port} after {deadline} s ({attempts} tries)", file=sys.stderr)
            return 1
        time.sleep(0.001)


def connect_once(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    try:
        t0 = time.perf_counter_ns()
        s.connect((addr, port))
        return (time.perf_counter_ns() - t0) / 1000.0
    finally:
        s.close()


def latency(argv):
    addr, port, n = argv[0], int(argv[1]), int(argv[2])
    for _ in range(50):
        connect_once(addr, port)
    times = [connect_once(addr, port) for _ in range(n)]
    print("\n".join(f"{t:.1f}" for t in times))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "wait":
        return wait(argv[1:])
    if len(argv) == 4 and argv[0] == "latency":
        return latency(argv[1:])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
