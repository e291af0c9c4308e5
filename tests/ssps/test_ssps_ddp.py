"""Two gloo ranks hold identical SSPS queues / clusters after several updates."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from tests.gloo import free_port, gloo_group


def _worker(rank, world, port, out_dir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    with gloo_group(rank, world, port):
        from sslsv_sb.ssps import SSPS

        torch.manual_seed(100 + rank)  # every rank sees different local data
        ssps = SSPS(
            64,
            6,
            5,
            n_positives=2,
            start_epoch=1,
            pos_queue_size=20,
            kmeans_clusters=4,
            kmeans_iters=3,
        )
        ssps.prepare_epoch(0)
        for _ in range(5):  # 5 steps x 2 ranks x 4 = 40 writes into 20 slots
            idx = torch.randint(0, 64, (4,))
            ssps.update(idx, torch.randn(4, 6), torch.randn(4, 2, 5))
        ssps.prepare_epoch(1)
        t = ssps.sample(torch.randint(0, 64, (4,)), torch.randn(4, 6))
        assert t.shape == (4,)
        torch.save(ssps.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_ranks_identical_queues(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    assert int(s0["pos_queue.n_written"]) == 40
    assert (s0["pos_queue.indices"] >= 0).all()
    assert (s0["sampler.assignments"] >= 0).sum() == (
        s0["ref_queue.indices"] >= 0
    ).sum()
