"""SSPS queues: FIFO wrap-around, per-index reference store, checkpointing."""

import io
from collections import deque

import torch

from sslsv_sb.ssps import SSPS, PositiveQueue, ReferenceQueue


def test_positive_queue_wraparound_matches_deque():
    torch.manual_seed(0)
    q = PositiveQueue(7, 2, n_positives=2)
    ref = deque(maxlen=7)
    start = 0
    for b in [3, 3, 3, 1, 5, 9, 2]:  # includes a batch larger than the queue
        idx = torch.arange(start, start + b)
        emb = torch.randn(b, 2, 2)
        q.write(idx, emb)
        ref.extend(zip(idx.tolist(), emb))
        start += b
        # the slot after ptr-1 going backwards holds the newest entries
        ages = q.age()
        filled = [s for s in range(7) if ages[s] >= 0]
        assert len(filled) == len(ref)
        order = sorted(filled, key=lambda s: ages[s])  # newest first
        newest = list(reversed(ref))
        for slot, (i, e) in zip(order, newest):
            assert q.indices[slot].item() == i
            assert torch.equal(q.embeddings[:, slot], e)
        assert int(q.n_written) == start
        assert int(q.ptr) == start % 7


def test_positive_queue_partial_fill_and_latest_mask():
    q = PositiveQueue(6, 1)
    q.write(torch.tensor([4, 2]), torch.randn(2, 1))
    assert q.indices.tolist() == [4, 2, -1, -1, -1, -1]
    assert q.age().tolist() == [1, 0, -1, -1, -1, -1]
    q.write(torch.tensor([4, 9]), torch.randn(2, 1))  # index 4 again
    assert q.latest_mask().tolist() == [False, True, True, True, False, False]


def test_reference_queue_by_index():
    q = ReferenceQueue(10, 3)
    q.write(torch.tensor([5, 1]), torch.tensor([[3.0, 0, 0], [0, 2.0, 0]]))
    q.write(torch.tensor([5]), torch.tensor([[0, 0, -4.0]]))
    assert q.filled().tolist() == [1, 5]
    assert torch.equal(
        q.embeddings[5], torch.tensor([0, 0, -1.0])
    )  # normalised, latest
    assert torch.equal(q.embeddings[1], torch.tensor([0, 1.0, 0]))


def test_state_dict_roundtrip_weights_only():
    torch.manual_seed(0)
    ssps = SSPS(
        30, 4, 3, n_positives=2, start_epoch=1, pos_queue_size=8, kmeans_clusters=3
    )
    ssps.prepare_epoch(0)
    for s in range(3):
        ssps.update(
            torch.arange(s * 7, s * 7 + 7), torch.randn(7, 4), torch.randn(7, 2, 3)
        )
    ssps.prepare_epoch(1)
    buf = io.BytesIO()
    torch.save(ssps.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = SSPS(
        30, 4, 3, n_positives=2, start_epoch=1, pos_queue_size=8, kmeans_clusters=3
    )
    other.load_state_dict(state)
    for k, v in ssps.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    assert other.active and int(other.pos_queue.ptr) == 21 % 8
    # resuming mid-epoch keeps the restored clustering
    before = other.sampler.assignments.clone()
    other.ref_queue.write(torch.arange(21, 30), torch.randn(9, 4))
    assert other.prepare_epoch(1) == {}
    assert torch.equal(other.sampler.assignments, before)
    assert "ssps_kmeans_n_stored" in other.prepare_epoch(1, force=True)
    assert "labels" not in state
