"""Side-by-side benchmark of direct TCP, `ssh -L` and colabtunnel's forwarder: `python -m benchmarks.run`."""
