"""SSPS sampler: intended clusters / true k-NN, never the anchor, vectorised == loop."""

import math

import pytest
import torch
import torch.nn.functional as F

import sslsv_sb.ssps.sampler as sampler_mod
from sslsv_sb.errors import SSLSVError
from sslsv_sb.ssps import SSPS, sample_ranks

N_SPK, PER_SPK, DIM = 6, 10, 16


def _clustered(seed=0, noise=0.05):
    """60 utterances of 6 well-separated speakers (one-hot centres)."""
    g = torch.Generator().manual_seed(seed)
    spk = torch.arange(N_SPK).repeat_interleave(PER_SPK)  # (60,)
    centres = torch.eye(DIM)[:N_SPK]
    ref = F.normalize(
        centres[spk] + noise * torch.randn(len(spk), DIM, generator=g), dim=1
    )
    return spk, ref


def _filled_ssps(sampling="kmeans-repr", k=N_SPK, queue=60, **kw):
    spk, ref = _clustered()
    ssps = SSPS(
        len(spk),
        DIM,
        DIM,
        sampling=sampling,
        start_epoch=1,
        pos_queue_size=queue,
        kmeans_clusters=k,
        same_space=True,
        **kw,
    )
    ssps.set_labels(spk)
    ssps.prepare_epoch(0)
    perm = torch.randperm(len(spk), generator=torch.Generator().manual_seed(1))
    for chunk in perm.split(8):  # batches of 8, last one partial
        ssps.update(chunk, ref[chunk], ref[chunk] * 2)  # positives = 2 * ref (tagged)
    metrics = ssps.prepare_epoch(1)
    return ssps, spk, ref, metrics


def test_kmeans_repr_same_cluster_never_self():
    ssps, spk, ref, metrics = _filled_ssps()
    assign = ssps.sampler.assignments
    idx = torch.arange(60)
    for seed in range(20):
        t = ssps.sample(idx, ref[idx], generator=torch.Generator().manual_seed(seed))
        assert (t >= 0).all() and ssps.metrics["ssps_coverage"].item() == 1.0
        picked = ssps.pos_queue.indices[t]
        assert (picked != idx).all()
        assert torch.equal(assign[picked], assign[idx])
    assert 0.0 <= metrics["ssps_kmeans_nmi_speaker"] <= 1.0


def test_inter_sampling_picks_nearest_other_cluster():
    ssps, spk, ref, _ = _filled_ssps(inter_sampling_size=1)
    c = ssps.sampler.centroids
    sims = c @ c.T
    sims.fill_diagonal_(-2)
    nearest = sims.argmax(1)
    assert torch.equal(ssps.sampler.nearby[:, 0], nearest)
    idx = torch.arange(60)
    t = ssps.sample(idx, ref)
    ok = t >= 0
    a = ssps.sampler.assignments
    picked = ssps.pos_queue.indices[t[ok]]
    assert torch.equal(a[picked], nearest[a[idx[ok]]])
    assert (a[picked] != a[idx[ok]]).all()


def test_knn_true_neighbours_never_self():
    ssps, spk, ref, _ = _filled_ssps(sampling="knn", intra_sampling_size=3)
    idx = torch.arange(60)
    sims = ref @ ref.T
    sims.fill_diagonal_(-math.inf)
    top3 = sims.topk(3, dim=1).indices
    for seed in range(10):
        t = ssps.sample(idx, ref, generator=torch.Generator().manual_seed(seed))
        picked = ssps.pos_queue.indices[t]
        assert (picked != idx).all()
        assert all(picked[i] in top3[i] for i in range(60))
    assert ssps.metrics["ssps_speaker_acc"].item() == 1.0


def test_exp_weighting_prefers_rank_zero():
    g = torch.Generator().manual_seed(0)
    n = torch.full((40000,), 10)
    r = sample_ranks(n, "exp", 0.7, generator=g)
    freq = torch.bincount(r, minlength=10).double() / len(r)
    p = torch.exp(-0.7 * torch.arange(10.0, dtype=torch.float64))
    p /= p.sum()
    assert freq.argmax() == 0 and (freq - p).abs().max() < 0.01
    u = torch.bincount(
        sample_ranks(n, "uniform", generator=g), minlength=10
    ).double() / len(r)
    assert (u - 0.1).abs().max() < 0.01 and r.max() <= 9
    # within SSPS-NN: exp picks the nearest neighbour most often
    ssps, spk, ref, _ = _filled_ssps(
        sampling="knn", intra_sampling_prob_fn="exp", intra_sampling_exp_lambda=0.7
    )
    sims = ref @ ref.T
    sims.fill_diagonal_(-math.inf)
    nn1 = sims.argmax(1)
    hits = 0
    for seed in range(30):
        t = ssps.sample(
            torch.arange(60), ref, generator=torch.Generator().manual_seed(seed)
        )
        hits += int((ssps.pos_queue.indices[t] == nn1).sum())
    rate = hits / (30 * 60)
    assert rate == pytest.approx(1 - math.exp(-0.7), abs=0.05)  # p(rank 0), n large


def _patched_ranks(frac):
    def fake(n, prob_fn="uniform", lam=0.7, generator=None):
        return torch.minimum((n.double() * frac).floor().long(), (n - 1).clamp(min=0))

    return fake


@pytest.mark.parametrize("inter", [0, 2])
@pytest.mark.parametrize("intra", [4, 1000])
def test_kmeans_repr_vectorised_equals_loop(monkeypatch, inter, intra):
    torch.manual_seed(3)
    r_size, dim, q_size = 40, 8, 25
    ssps = SSPS(
        r_size,
        dim,
        dim,
        start_epoch=1,
        pos_queue_size=q_size,
        kmeans_clusters=5,
        inter_sampling_size=inter,
        intra_sampling_size=intra,
    )
    ssps.prepare_epoch(0)
    for _ in range(6):  # 48 writes into 25 slots, with repeated indices
        idx = torch.randint(0, r_size, (8,))
        ssps.update(idx, torch.randn(8, dim), torch.randn(8, dim))
    ssps.prepare_epoch(1)
    anchors = torch.randint(0, r_size, (30,))
    anchors[:3] = -1  # replaced below by indices absent from the reference queue
    absent = (ssps.ref_queue.indices < 0).nonzero()[:, 0]
    anchors[:3] = absent[:3] if len(absent) >= 3 else torch.randint(0, r_size, (3,))
    a_ref = torch.randn(30, dim)
    frac = torch.rand(30, dtype=torch.float64)
    monkeypatch.setattr(sampler_mod, "sample_ranks", _patched_ranks(frac))
    got = ssps.sample(anchors, a_ref)

    s, pos = ssps.sampler, ssps.pos_queue
    age = pos.age().tolist()
    qidx = pos.indices.tolist()
    covered = 0
    for b in range(30):
        a = int(anchors[b])
        ca = int(s.assignments[a])
        if ca < 0:
            ca = int((F.normalize(a_ref[b], dim=0) @ s.centroids.T).argmax())
        if inter:
            r = min(int(math.floor(inter * frac[b])), inter - 1)
            target = int(s.nearby[ca, r])
        else:
            target = ca
        # latest copy of every index, in the target cluster, not the anchor
        latest = {}
        for slot in range(q_size):
            if qidx[slot] >= 0 and (
                qidx[slot] not in latest or age[slot] < age[latest[qidx[slot]]]
            ):
                latest[qidx[slot]] = slot
        cands = [
            sl for i, sl in latest.items() if s.assignments[i] == target and i != a
        ]
        cands.sort(key=lambda sl: age[sl])
        cands = cands[:intra]
        covered += bool(cands)
        if not cands:
            assert got[b] == -1
            continue
        r = min(int(math.floor(len(cands) * frac[b])), len(cands) - 1)
        assert got[b] == cands[r], b
    # coverage right after wrap-around (48 writes into 25 slots)
    assert int(pos.n_written) == 48 and int(pos.ptr) == 48 % 25
    assert ssps.metrics["ssps_coverage"].item() == pytest.approx(covered / 30)


def test_knn_vectorised_equals_loop(monkeypatch):
    torch.manual_seed(4)
    r_size, dim, q_size = 40, 8, 25
    ssps = SSPS(
        r_size,
        dim,
        5,
        sampling="knn",
        start_epoch=1,
        pos_queue_size=q_size,
        intra_sampling_size=6,
    )
    ssps.prepare_epoch(0)
    for _ in range(6):
        idx = torch.randint(0, r_size, (8,))
        ssps.update(idx, torch.randn(8, dim), torch.randn(8, 5))
    ssps.prepare_epoch(1)
    anchors = torch.randint(0, r_size, (30,))
    a_ref = torch.randn(30, dim)
    frac = torch.rand(30, dtype=torch.float64)
    monkeypatch.setattr(sampler_mod, "sample_ranks", _patched_ranks(frac))
    got = ssps.sample(anchors, a_ref)
    pos, ref = ssps.pos_queue, ssps.ref_queue
    age = pos.age().tolist()
    latest = {}
    for slot, i in enumerate(pos.indices.tolist()):
        if i >= 0 and (i not in latest or age[slot] < age[latest[i]]):
            latest[i] = slot
    for b in range(30):
        q = F.normalize(a_ref[b], dim=0)
        cands = [
            (float(q @ ref.embeddings[i]), sl)
            for i, sl in latest.items()
            if i != anchors[b]
        ]
        cands = [sl for _, sl in sorted(cands, reverse=True)][:6]
        r = min(int(math.floor(len(cands) * frac[b])), len(cands) - 1)
        assert got[b] == cands[r]


def test_apply_replaces_only_covered_rows():
    ssps, spk, ref, _ = _filled_ssps()
    t = torch.tensor([0, -1, 5, -1])
    positives = torch.randn(4, DIM, requires_grad=True)
    out = ssps.apply(positives, t)
    assert torch.equal(out[0], ssps.pos_queue.embeddings[0, 0])
    assert torch.equal(out[2], ssps.pos_queue.embeddings[0, 5])
    assert torch.equal(out[1], positives[1]) and torch.equal(out[3], positives[3])
    out.sum().backward()
    assert positives.grad[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_centroid_mode_requires_same_space():
    with pytest.raises(SSLSVError, match="kmeans-centroid"):
        SSPS(20, 8, 4, sampling="kmeans-centroid", kmeans_clusters=2)
    with pytest.raises(SSLSVError, match="kmeans-centroid"):
        SSPS(20, 8, 8, sampling="kmeans-centroid", kmeans_clusters=2, same_space=False)
    ssps, spk, ref, _ = _filled_ssps(sampling="kmeans-centroid")
    t = ssps.sample(torch.arange(60), ref)
    assert torch.equal(t, ssps.sampler.assignments)
    out = ssps.apply(torch.randn(60, 2, DIM), t)
    assert torch.equal(out[:, 1], ssps.sampler.centroids[t])


def test_inactive_before_start_epoch_and_fill_window():
    ssps = SSPS(20, 4, 4, sampling="knn", start_epoch=3, pos_queue_size=8)
    ssps.prepare_epoch(1)
    ssps.update(torch.arange(4), torch.randn(4, 4), torch.randn(4, 4))
    assert int(ssps.pos_queue.n_written) == 0  # not yet filling
    ssps.prepare_epoch(2)
    ssps.update(torch.arange(4), torch.randn(4, 4), torch.randn(4, 4))
    assert int(ssps.pos_queue.n_written) == 4
    assert (ssps.sample(torch.arange(2), torch.randn(2, 4)) == -1).all()
    ssps.prepare_epoch(3)
    assert (
        ssps.active and (ssps.sample(torch.arange(8, 10), torch.randn(2, 4)) >= 0).all()
    )


def test_fit_deterministic_and_consistent():
    ssps, _, ref, _ = _filled_ssps()
    again, _, _, _ = _filled_ssps()
    a, c = ssps.sampler.assignments, ssps.sampler.centroids
    assert torch.equal(a, again.sampler.assignments)
    assert torch.equal(c, again.sampler.centroids)
    assert torch.allclose(c.norm(dim=1), torch.ones(N_SPK))
    stored = ssps.ref_queue.embeddings.float()
    assert torch.equal(a, (stored @ c.T).argmax(1))


def test_fit_recovers_separated_clusters():
    # K = 2x speakers: every speaker is covered by the random init w.h.p.
    ssps, spk, _, metrics = _filled_ssps(k=2 * N_SPK)
    a = ssps.sampler.assignments
    for c in a.unique():  # each cluster is pure (one speaker)
        assert spk[a == c].unique().numel() == 1
    assert metrics["ssps_kmeans_nmi_speaker"] > 0.7
