"""Helpers for the tests that spawn gloo process groups on this machine."""

import contextlib
import gc
import socket

import torch.distributed as dist


def free_port():
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank, world, port):
    """Join a gloo group on ``127.0.0.1:port``; leave it cleanly.

    On success every rank first drops its unreachable objects (DDP reducers and
    their gloo work hold threads), then waits at a barrier, so that no rank tears
    the group down while another still uses it. Torn down in another order, gloo
    has aborted a worker once ("terminate called without an active exception",
    SIGABRT) after the test's work had finished.
    """
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        yield
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
