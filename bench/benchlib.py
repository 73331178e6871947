"""What the benchmark drivers share: loopback ports and waiting for a process's output line.

Imported by bench/*/run.py (each puts bench/ on sys.path first). Not a test library."""
import os, signal, socket, subprocess, time

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


def broker_config(path, port, sink_ports, store, delivery, endpoint="", broker=""):
    """Writes a broker config: the trust `rtx` posts on 127.0.0.1:port (API there too) and every
    record goes to each sink, as partners dest-0, dest-1... `delivery` and `broker` are YAML lines
    (two-space indented) for those sections; `endpoint` is extra keys for each fhir-rest endpoint."""
    extra = f", {endpoint}" if endpoint else ""
    parts = [("broker:\n" + broker if broker else ""),
             f"api:\n  listen: 127.0.0.1:{port}\nstore:\n  path: {store}\ndelivery:\n{delivery}",
             "partners:\n  - id: rtx\n    name: Bench Trust\n    kind: trust\n    ods: RTX\n"]
    for i, sp in enumerate(sink_ports):
        parts.append(f"""  - id: dest-{i}
    name: Destination {i}
    kind: primary-care
    ods: A8100{i}
    endpoint: {{ type: fhir-rest, url: "http://127.0.0.1:{sp}/fhir"{extra} }}
""")
    parts.append(f"""inbound:
  - id: http
    type: fhir-rest
    listen: 127.0.0.1:{port}
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: everyone
    match: {{}}
    to: [{", ".join(f"dest-{i}" for i in range(len(sink_ports)))}]
""")
    with open(path, "w") as f:
        f.write("".join(parts))


def stop_all(procs, timeout=20):
    """SIGTERM to each process still running, then waits; SIGKILL when it does not end in time."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
