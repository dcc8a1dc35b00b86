"""The InfLLM-V2 references against brute-force loops written straight from sala-model.md §3.4–3.6."""

import torch

from sala_report.kernels import SparseParams, compress_keys, dense_attention, select_blocks, sparse_attention

# SALA's ratios at a small scale: K1 = (8, 4), K2 = (32, 16), blocks of 16, 2 local blocks, top-3.
P = SparseParams(kernel_size=8, kernel_stride=4, block_size=16, init_blocks=1, window_size=32, topk=3)


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def brute_select(q, k1, k2, q_start, kv_len, p, causal):
    B, Tq, Hq, D = q.shape
    Hkv = k1.shape[2]
    G = Hq // Hkv
    nb = -(-kv_len // p.block_size)
    k_eff = min(p.topk + p.local_blocks, nb)
    out = torch.empty(B, Hkv, Tq, k_eff, dtype=torch.int32)
    for b in range(B):
        for g in range(Hkv):
            for i in range(Tq):
                t = q_start + i
                vis1 = [c for c in range(k1.shape[1]) if not causal or c * p.kernel_stride + p.kernel_size - 1 <= t]
                vis2 = [c for c in range(k2.shape[1]) if not causal or c * p.lse_stride + p.lse_kernel_size - 1 <= t]
                shared = {c: 0.0 for c in vis1}
                for h in range(g * G, (g + 1) * G):
                    qv = q[b, i, h].double()
                    s2 = torch.stack([qv @ k2[b, c, g].double() for c in vis2]) * D**-0.5 if vis2 else None
                    lse = torch.logsumexp(s2, 0).item() if vis2 else 0.0
                    for c in vis1:
                        shared[c] += torch.exp(qv @ k1[b, c, g].double() * D**-0.5 - lse).item()
                bt = t // p.block_size
                scores = []
                for j in range(nb):
                    window = [
                        shared[c]
                        for c in range(j * p.pool_stride - 1, j * p.pool_stride + p.pool_stride)
                        if c in shared
                    ]
                    s = max(window) if window else float("-inf")
                    if j < p.init_blocks or bt - p.local_blocks <= j <= bt:
                        s = float("inf")
                    if j > bt:
                        s = float("-inf")
                    scores.append((-s, j))
                chosen = sorted(j for _, j in sorted(scores)[:k_eff])
                out[b, g, i] = torch.tensor([j if j <= bt else -1 for j in chosen], dtype=torch.int32)
    return out


def brute_attention(q, k, v, idx, q_start, bs, scale):
    B, Tq, Hq, D = q.shape
    G = Hq // k.shape[2]
    out = torch.zeros(B, Tq, Hq, D, dtype=torch.float64)
    for b in range(B):
        for i in range(Tq):
            t = q_start + i
            for h in range(Hq):
                blocks = [int(j) for j in idx[b, h // G, i] if j >= 0]
                keys = [s for j in blocks for s in range(j * bs, min(j * bs + bs, k.shape[1])) if s <= t]
                if not keys:
                    continue
                s = torch.stack([q[b, i, h].double() @ k[b, s, h // G].double() for s in keys]) * scale
                p = torch.softmax(s, 0)
                out[b, i, h] = sum(p[n] * v[b, keys[n], h // G].double() for n in range(len(keys)))
    return out


def test_compress_counts_means_and_incremental_tail():
    k = rand(2, 77, 3, 5)
    c = compress_keys(k, kernel_size=8, stride=4)
    assert c.shape == (2, (77 - 8) // 4 + 1, 3, 5)
    assert torch.allclose(c[:, 3], k[:, 12:20].mean(1), atol=1e-6)
    tail = compress_keys(k[:, 60:68], kernel_size=8, stride=4)  # the newest complete window [60, 68)
    assert torch.allclose(tail[:, 0], c[:, 15], atol=1e-6)
    assert compress_keys(k[:, :7], kernel_size=8, stride=4).shape == (2, 0, 3, 5)
    kb = k.to(torch.bfloat16)
    assert compress_keys(kb, kernel_size=8, stride=4).dtype == torch.bfloat16


def _inputs(L, Hq=4, Hkv=2, D=8, seed=0):
    q, k, v = rand(1, L, Hq, D, seed=seed), rand(1, L, Hkv, D, seed=seed + 1), rand(1, L, Hkv, D, seed=seed + 2)
    k1 = compress_keys(k, kernel_size=P.kernel_size, stride=P.kernel_stride)
    k2 = compress_keys(k, kernel_size=P.lse_kernel_size, stride=P.lse_stride)
    return q, k, v, k1, k2


def test_select_matches_brute_force_with_forced_and_causal():
    L = 150  # 10 blocks, the last one partial
    q, k, v, k1, k2 = _inputs(L)
    got = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True)
    want = brute_select(q, k1, k2, 0, L, P, True)
    assert got.shape == (1, 2, L, 5) and got.dtype == torch.int32
    assert torch.equal(got, want)
    # early queries: only blocks <= own block, the rest -1; init and own block always there
    assert got[0, 0, 5].tolist() == [0, -1, -1, -1, -1]
    bt = torch.arange(L) // 16
    assert ((got == 0).any(-1)).all() and ((got == bt[None, None, :, None]).any(-1)).all()
    assert (got <= bt[None, None, :, None]).all()


def test_select_chunked_queries_and_decode_agree_with_one_shot():
    L = 200
    q, k, v, k1, k2 = _inputs(L, seed=3)
    full = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True)
    tail = select_blocks(q[:, 120:], k1, k2, q_start=120, kv_len=L, params=P, causal=True)
    assert torch.equal(tail, full[:, :, 120:])
    last = select_blocks(q[:, -1:], k1, k2, q_start=L - 1, kv_len=L, params=P, causal=False)
    assert torch.equal(last, full[:, :, -1:])


def test_select_ties_go_to_lower_blocks():
    L = 160
    q = rand(1, L, 4, 8)
    k = torch.ones(1, L, 2, 8)  # every K1 / K2 entry equal: all scored blocks tie
    k1 = compress_keys(k, kernel_size=8, stride=4)
    k2 = compress_keys(k, kernel_size=32, stride=16)
    got = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True)
    # the last query (block 9): forced 0 and 7, 8, 9; the one scored slot goes to the lowest tied block, 1
    assert got[0, 0, -1].tolist() == [0, 1, 7, 8, 9]


def test_sparse_attention_matches_brute_force_and_dense_when_all_selected():
    L = 70
    q, k, v, k1, k2 = _inputs(L, seed=5)
    idx = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True)
    got = sparse_attention(q, k, v, idx, q_start=0, block_size=16, scale=0.35)
    want = brute_attention(q, k, v, idx, 0, 16, 0.35)
    assert torch.allclose(got.double(), want, atol=1e-5)
    every = torch.arange(5, dtype=torch.int32).expand(1, 2, L, 5).contiguous()
    dense = dense_attention(q, k, v, q_start=0, scale=0.35)
    assert torch.allclose(sparse_attention(q, k, v, every, q_start=0, block_size=16, scale=0.35), dense, atol=1e-5)


def test_dense_attention_with_offset_queries():
    q, k, v, _, _ = _inputs(40, seed=7)
    full = dense_attention(q, k, v, q_start=0, scale=0.3)
    part = dense_attention(q[:, 25:], k, v, q_start=25, scale=0.3)
    assert torch.allclose(part, full[:, 25:], atol=1e-6)
