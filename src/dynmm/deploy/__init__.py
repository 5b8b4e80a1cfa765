"""Deployable artifacts that keep the skipping: graphs a standard runtime (onnxruntime, torch.export) executes with
the branches intact, the standalone runner shipped beside them, their verification and batch-1 latency.

Method-free: a method says which graphs its model splits into (methods/<name>/deploy.py); this package writes,
counts, verifies and times them.
"""
