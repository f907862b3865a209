"""Start N local processes of one command as a single multi-process JAX job.

    python launch/local.py --processes 2 --devices-per-process 4 -- t2v train --config ...
    python launch/local.py -n 2 -- python -m my.module args

Each process gets T2V_COORDINATOR=127.0.0.1:<free port>, T2V_NUM_PROCESSES and
T2V_PROCESS_ID, which `t2v.parallel.initialize_distributed()` (called by t2v.train) hands
to `jax.distributed.initialize`. With --devices-per-process the processes run on CPU
with that many fake devices each (XLA_FLAGS is set before the child imports jax).
Output lines are prefixed with the process id. If one process fails, the others are
stopped; the exit status is the first non-zero one.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_environment(process_id: int, num_processes: int, port: int, devices_per_process: int | None) -> dict:
    env = dict(os.environ)
    env.update(
        T2V_COORDINATOR=f"127.0.0.1:{port}",
        T2V_NUM_PROCESSES=str(num_processes),
        T2V_PROCESS_ID=str(process_id),
    )
    if devices_per_process:
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _relay(process_id: int, stream, out) -> None:
    for line in stream:
        out.write(f"[{process_id}] {line}")
        out.flush()


def launch(command: list[str], num_processes: int, devices_per_process: int | None = None, port: int | None = None) -> int:
    """Runs `command` as `num_processes` cooperating processes; returns the exit status."""
    if not command:
        raise ValueError("launch/local.py: no command given (put it after --)")
    if num_processes < 1:
        raise ValueError(f"launch/local.py: --processes={num_processes} must be at least 1")
    port = port or free_port()
    processes = []
    relays = []
    for process_id in range(num_processes):
        process = subprocess.Popen(
            command,
            env=process_environment(process_id, num_processes, port, devices_per_process),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        relay = threading.Thread(target=_relay, args=(process_id, process.stdout, sys.stdout), daemon=True)
        relay.start()
        relays.append(relay)

    # Pass a preemption notice on to every process, as a cluster scheduler would.
    def forward(signum, frame):
        for p in processes:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = 0
        remaining = list(processes)
        while remaining:
            for p in list(remaining):
                try:
                    code = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                remaining.remove(p)
                if code and not status:
                    status = code
                    # One process is gone; the others would wait for it forever.
                    for other in remaining:
                        other.terminate()
        for relay in relays:
            relay.join(timeout=5)
        return status
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--processes", type=int, default=2, help="number of processes")
    parser.add_argument(
        "--devices-per-process", type=int, default=None, help="fake CPU devices per process (CPU only)"
    )
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return launch(command, args.processes, args.devices_per_process, args.port)


if __name__ == "__main__":
    sys.exit(main())
