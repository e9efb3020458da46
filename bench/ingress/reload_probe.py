#!/usr/bin/env python3
"""Polls Portico's Ingress listener for bench/ingress-reload.sh, with little overhead per try:
one raw TCP connection and one `GET / HTTP/1.1` per try, 1 ms apart.

Usage:
  reload_probe.py wait ADDR PORT SINCE TIMEOUT_S HOST...
      Polls until each HOST in turn answers 200; prints, per HOST, the seconds from SINCE (a
      Unix time, e.g. `date +%s.%N` when the server was started) to its first 200. Exits 1
      when a HOST does not answer 200 within TIMEOUT_S of SINCE.
  reload_probe.py append FILE NAME HOST ADDR PORT TIMEOUT_S
      Checks that HOST does not answer 200 yet, then appends one Ingress NAME for HOST (path /,
      Service bench port 80; the text of bench/ingress/gen.py) to FILE and polls until HOST
      answers 200. Prints the milliseconds from just before the write to the first 200, and
      the number of tries. Exits 1 on timeout.

Standard library only.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen import reload_ingress  # noqa: E402

POLL_INTERVAL_S = 0.001


def status(addr, port, host):
    """The status code HOST gets for GET /, or None when nothing answers."""
    try:
        with socket.create_connection((addr, port), timeout=2) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def poll(addr, port, host, t0, timeout):
    tries = 0
    while True:
        tries += 1
        if status(addr, port, host) == 200:
            return time.monotonic() - t0, tries
        if time.monotonic() - t0 > timeout:
            return None, tries
        time.sleep(POLL_INTERVAL_S)


def main():
    args = sys.argv[1:]
    if len(args) >= 6 and args[0] == "wait":
        addr, port, since, timeout = args[1], int(args[2]), float(args[3]), float(args[4])
        # poll() counts on the monotonic clock: move SINCE onto it.
        t0 = time.monotonic() - (time.time() - since)
        for host in args[5:]:
            took, _ = poll(addr, port, host, t0, timeout)
            if took is None:
                sys.exit(f"reload probe: {host} did not answer 200 within {timeout:.0f} s")
            print(f"{took:.3f}")
    elif len(args) == 7 and args[0] == "append":
        path, name, host, addr, port, timeout = args[1], args[2], args[3], args[4], int(args[5]), float(args[6])
        before = status(addr, port, host)
        if before == 200:
            sys.exit(f"reload probe: {host} answers 200 before its Ingress is written")
        text = reload_ingress(name, host)
        t0 = time.monotonic()
        with open(path, "a") as f:
            f.write(text)
        took, tries = poll(addr, port, host, t0, timeout)
        if took is None:
            sys.exit(f"reload probe: {host} did not answer 200 within {timeout:.0f} s of the write")
        print(f"{1000 * took:.1f} {tries}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
