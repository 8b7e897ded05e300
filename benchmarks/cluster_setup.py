"""Signalling only: call setups per second and connected clients, one relay against a cluster.

Each configuration starts its relays as `callbot serve` processes (one without Redis, one with
Redis, three sharing a redis-server) and drives them from this process with scripted clients
over raw WebSockets: no media, no ICE. A caller sends `call_offer`, its callee answers at once
with `call_answer`, the caller hangs up and places the next call. In a cluster caller i sits
on node i and its callee on the next node, so every call crosses nodes. Three measures:

- setups per second: PAIRS caller/callee pairs calling in a loop for SECONDS;
- setup latency (offer sent to answer received), one call at a time, callee on the same node
  or on another one;
- connected clients: CLIENTS connections opened together (hello, welcome), spread over the
  nodes; the time until all are welcomed and the relays' memory then.

    python benchmarks/cluster_setup.py                  # about a minute
    python benchmarks/cluster_setup.py --pairs 40 --seconds 20 --clients 3000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from _common import machine, percentile, rss_mb, table
from websockets.asyncio.client import ClientConnection, connect

from callbot.cli.workers import end_with_supervisor
from callbot.signaling.relay_core import RelayLimits
from callbot.signaling.state import RelayState

#: A caller places at most this many calls per second: each call is two messages from it (offer,
#: hangup), and a relay drops what a connection sends beyond its sustained rate limit.
CALLS_PER_SECOND = RelayLimits().rate / 2 * 0.9
#: An answer later than this means the relay lost the call: the run fails instead of hanging.
ANSWER_TIMEOUT = 30.0

SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "a=x\r\n" * 40  # ~300 bytes


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """Relay processes (and the redis-server they share, if any) for one configuration."""

    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    state_dir: Path

    def url(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.ports[index % len(self.ports)]}/ws"

    def mint(self, user: str) -> str:
        state = RelayState(self.state_dir)
        try:
            return state.mint(user, 3600, "user")
        finally:
            state.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def start(nodes: int, redis: bool, workdir: Path) -> Cluster:
    """`nodes` relays (sharing a fresh redis-server when `redis`), ready to serve."""
    processes: list[subprocess.Popen[bytes]] = []
    extra: list[str] = []
    # each child gets SIGTERM if this benchmark dies (a test's timeout): no relay is orphaned
    end_with_parent = functools.partial(end_with_supervisor, os.getpid())
    if redis:
        port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        processes.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=end_with_parent,
        ))  # fmt: skip
        time.sleep(0.5)
        extra = ["--redis", f"redis://127.0.0.1:{port}/0"]
    first = workdir / "node-0"
    RelayState(first).close()
    ports = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    for index in range(nodes):
        state_dir = workdir / f"node-{index}"
        if index:
            state_dir.mkdir(mode=0o700)
            shutil.copy(first / "state.db", state_dir / "state.db")
        ports.append(free_port())
        command = [sys.executable, "-m", "callbot", "serve", "--port", str(ports[-1]),
                   "--state-dir", str(state_dir), *extra]  # fmt: skip
        processes.append(subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=end_with_parent,
        ))  # fmt: skip
    deadline = time.monotonic() + 60
    while not all(_healthy(p) for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the relays did not come up in 60 s")
        time.sleep(0.1)
    return Cluster(ports, processes, first)


async def hello(url: str, token: str) -> ClientConnection:
    websocket = await connect(url, proxy=None, compression=None, open_timeout=60)
    await websocket.send(json.dumps({"type": "hello", "token": token}))
    reply = json.loads(await websocket.recv())
    if reply.get("type") != "welcome":
        raise RuntimeError(f"not welcomed: {reply}")
    return websocket


async def callee(websocket: ClientConnection) -> None:
    """Answer every offer at once; ignore the rest. Closes the connection when cancelled."""
    async with websocket:
        async for data in websocket:
            message = json.loads(data)
            if message.get("type") == "call_offer":
                answer = {"type": "call_answer", "call_id": message["call_id"], "sdp": SDP}
                await websocket.send(json.dumps(answer))


async def place(websocket: ClientConnection, to: str) -> float:
    """One call: offer, answer, hangup; seconds from offer to answer."""
    call_id = uuid.uuid4().hex
    started = time.perf_counter()
    await websocket.send(json.dumps({"type": "call_offer", "call_id": call_id, "to": to,
                                     "sdp": SDP}))  # fmt: skip
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while True:
            message = json.loads(await websocket.recv())
            if message.get("type") == "error":
                raise RuntimeError(f"the relay refused a message: {message}")
            if message.get("call_id") != call_id:
                continue
            if message.get("type") != "call_answer":
                raise RuntimeError(f"call refused: {message}")
            break
    elapsed = time.perf_counter() - started
    await websocket.send(json.dumps({"type": "hangup", "call_id": call_id}))
    return elapsed


async def pairs(cluster: Cluster, count: int, tag: str, same_node: bool = False) -> tuple:
    """`count` connected (caller, callee name) pairs and the callees' answering tasks."""
    callers, tasks = [], []
    for i in range(count):
        name = f"{tag}-callee-{i}"
        where = i if same_node else i + 1
        answering = await hello(cluster.url(where), cluster.mint(name))
        tasks.append(asyncio.get_running_loop().create_task(callee(answering)))
        callers.append((await hello(cluster.url(i), cluster.mint(f"{tag}-caller-{i}")), name))
    await asyncio.sleep(0.5)  # every node hears of every callee
    return callers, tasks


async def throughput(cluster: Cluster, count: int, seconds: float) -> tuple[float, float]:
    """Setups per second with `count` pairs calling in a loop; and their p95 latency (ms)."""
    callers, tasks = await pairs(cluster, count, "load")
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def loop(websocket: ClientConnection, to: str) -> None:
        next_call = time.monotonic()
        while next_call < deadline:
            await asyncio.sleep(next_call - time.monotonic())
            latencies.append(await place(websocket, to))
            next_call = max(next_call + 1 / CALLS_PER_SECOND, time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(loop(w, to) for w, to in callers))
    rate = len(latencies) / (time.monotonic() - started)
    await close_all([w for w, _ in callers], tasks)
    return rate, percentile(latencies, 95) * 1000


async def latency(cluster: Cluster, same_node: bool, calls: int) -> list[float]:
    """Offer-to-answer milliseconds of `calls` calls placed one after another."""
    callers, tasks = await pairs(cluster, 1, f"lat-{same_node}", same_node)
    (websocket, to), times = callers[0], []
    for _ in range(calls):
        times.append(await place(websocket, to) * 1000)
    await close_all([websocket], tasks)
    return times


async def clients(cluster: Cluster, count: int) -> tuple[float, float]:
    """Seconds to get `count` clients welcomed at once, and the relays' RSS (MB) then."""
    tokens = [cluster.mint(f"idle-{i}") for i in range(count)]
    started = time.monotonic()
    sockets = await asyncio.gather(*(hello(cluster.url(i), t) for i, t in enumerate(tokens)))
    took = time.monotonic() - started
    memory = rss_mb(p.pid for p in cluster.processes)
    await close_all(list(sockets), [])
    return took, memory


async def close_all(sockets: list[ClientConnection], tasks: list[asyncio.Task[None]]) -> None:
    """Close every client connection (answering callees' too), so the relays stop at once."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, *(s.close() for s in sockets), return_exceptions=True)


async def measure(args: argparse.Namespace) -> None:
    configs = [("1 node, no Redis", 1, False), ("1 node + Redis", 1, True),
               ("3 nodes + Redis", 3, True)]  # fmt: skip
    rows, lat_rows = [], []
    for label, nodes, redis in configs:
        with tempfile.TemporaryDirectory() as workdir:
            cluster = start(nodes, redis, Path(workdir))
            try:
                for same in (True, False) if nodes > 1 else (True,):
                    times = await latency(cluster, same, args.calls)
                    where = "same node" if same else "across nodes"
                    lat_rows.append((label, where, f"{percentile(times, 50):.2f}",
                                     f"{percentile(times, 95):.2f}"))  # fmt: skip
                rate, p95 = await throughput(cluster, args.pairs, args.seconds)
                took, memory = await clients(cluster, args.clients)
                rows.append((label, f"{rate:.0f}", f"{p95:.1f}", f"{took:.2f}", f"{memory:.0f}"))
            finally:
                await asyncio.to_thread(cluster.stop)  # the loop still serves our clients
    print(machine())
    print(f"load average before: {args.load}; after: {os.getloadavg()[0]:.2f}")
    print(table(["relays", "setups/s", "p95 ms under load", f"{args.clients} clients in s",
                 "relays' RSS MB"], rows))  # fmt: skip
    print()
    print(table(["relays", "callee", "median ms", "p95 ms"], lat_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="caller/callee pairs (load)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load run")
    parser.add_argument("--clients", type=int, default=1000, help="clients connected at once")
    parser.add_argument("--calls", type=int, default=100, help="calls timed one at a time")
    args = parser.parse_args()
    args.load = f"{os.getloadavg()[0]:.2f}"
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
