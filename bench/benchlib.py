"""What the benchmark drivers share: loopback ports and waiting for a process's output line.

Imported by bench/*/run.py (each puts bench/ on sys.path first). Not a test library."""
import os, socket, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A loopback port free at the moment of asking (benchmarks only: tests bind port 0)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_line(proc, needle, timeout=60):
    """Reads proc's stdout until a line contains needle; that line. Raises on exit or timeout."""
    end = time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited before '{needle}': {proc.args}")
            continue
        if needle in line:
            return line
    raise RuntimeError(f"timeout waiting for {needle!r}")
