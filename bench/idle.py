#!/usr/bin/env python3
"""Memory a proxy keeps per idle keep-alive connection (PORTICO_BENCH_IDLE in bench/ingress.sh
and bench/l4.sh).

Usage:
  idle.py ADDR PORT CONNECTIONS PID    measure one proxy
  idle.py report RESULTS_DIR PEER...   the table of idle-PEER.txt files, with Portico's ratios

Measuring opens CONNECTIONS HTTP/1.1 connections to ADDR:PORT, sends one request on each (the
routes of bench/ingress.sh in turn, keep-alive; a backend behind an L4 proxy answers any of
them), reads each answer whole (it must be a 200), and once every one has its answer, holds
them all open and idle for 2 s. Prints "KIB_PER_CONNECTION RSS_BEFORE_MIB RSS_AFTER_MIB": the
growth of VmRSS summed over PID and its descendants, divided by CONNECTIONS. Exits 1 when a
connection fails or gets anything but a 200.

Run it on a freshly started proxy: memory freed by earlier, heavier runs would be reused and
hide what the connections cost.
"""

import asyncio
import os
import sys


def tree(pid):
    """PID and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except OSError:
            pass
    return total


async def one(addr, port, i, answered, hold):
    reader, writer = await asyncio.open_connection(addr, port)
    host, path = f"h{i % 20:02d}.bench.test", f"/p{(i // 20) % 10}/bench"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    if status != b"200" or not length:
        raise RuntimeError(f"{host}{path}: {head[:80]!r}")
    await reader.readexactly(int(length[0].split(b":")[1]))
    answered.append(i)
    await hold.wait()
    writer.close()


async def measure(addr, port, n, pid):
    before = rss_kib(pid)
    answered, hold, tasks = [], asyncio.Event(), []
    try:
        for i in range(n):
            tasks.append(asyncio.create_task(one(addr, port, i, answered, hold)))
            if i % 250 == 249:
                # Let the proxy take connections in batches, not all in one backlog.
                await asyncio.sleep(0.02)
        for _ in range(600):
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()
            if len(answered) == n:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"only {len(answered)} of {n} connections answered in 30 s")
        # Idle: every connection answered and waiting for its next request.
        await asyncio.sleep(2)
        after = rss_kib(pid)
    finally:
        hold.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"{(after - before) / n:.2f} {before / 1024:.1f} {after / 1024:.1f}")


def report(results, peers):
    """The memory each proxy kept per idle connection, and Portico's against each peer's."""
    rows = {}
    for peer in peers:
        path = os.path.join(results, f"idle-{peer}.txt")
        if os.path.exists(path):
            with open(path) as f:
                rows[peer] = tuple(float(x) for x in f.read().split())
    if not rows:
        sys.exit("idle.py: no idle-connection results")
    print("idle keep-alive connections, on the freshly started proxies:")
    print(f"{'peer':<9} {'KiB/conn':>9} {'RSS before MiB':>15} {'RSS after MiB':>14}")
    print("-" * 50)
    for peer, (per_conn, before, after) in rows.items():
        print(f"{peer:<9} {per_conn:>9.2f} {before:>15.1f} {after:>14.1f}")
    if "portico" in rows:
        print("ratios portico / peer (KiB per connection; lower is better):")
        for peer, (per_conn, _, _) in rows.items():
            if peer != "portico":
                shown = f"{rows['portico'][0] / per_conn:.2f}x" if per_conn > 0 else "-"
                print(f"  portico / {peer:<8} {shown}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3:])
        return
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    addr, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        asyncio.run(measure(addr, port, n, pid))
    except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        sys.exit(f"idle.py: {addr}:{port}: {err}")


if __name__ == "__main__":
    main()
