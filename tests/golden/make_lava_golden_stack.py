#!/usr/bin/env python3
"""Generate golden vectors for a TWO-layer Dense -> LIF -> Dense -> LIF chain.

Runs ONLY under the Lava venv (Python 3.10, lava-nc==0.10.0), like
make_lava_golden.py:

    /tmp/lava310/bin/python tests/golden/make_lava_golden_stack.py
    /tmp/lava310/bin/python tests/golden/make_lava_golden_stack.py NAME   # dry run

Network per config (Loihi2SimCfg(select_tag="fixed_pt") -> PySendModelFixed,
PyDenseModelBitAcc, PyLifModelBitAcc, PyReceiveModelFixed):

    io.source.RingBuffer(data=S.T) -> Dense1(W1, ...) -> LIF1(...)
        LIF1.s_out -> Dense2(W2, ...) -> LIF2(...) -> io.sink.RingBuffer (sink2)
        LIF1.s_out -> io.sink.RingBuffer (sink1)      (fan-out of the same port)

The network is advanced with RunSteps(num_steps=1) T times; after each step
u and v of both LIFs and that step's column of both sinks are recorded. Each
sink gets its LIF's s_out in the same step, so layer{1,2}.s[k] is the spike
emitted at (0-based) step k. Same cross-checks as make_lava_golden.py, per
layer.

Output: tests/golden/lava_dense_lif_stack.npz (see README.md in this folder).
This script must not import torch or neuro_emu.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lava_golden import _bern, _exact_int, write_golden  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lava_dense_lif_stack.npz")
LAYER_KEYS = ("weights", "params", "bias_mant", "bias_exp", "u0", "v0")


# --------------------------------------------------------------------------
# configuration table
# --------------------------------------------------------------------------
def _layer(W, *, weight_exp=0, num_weight_bits=8, num_message_bits=0, du=0, dv=0,
           vth=10, bias_mant=0, bias_exp=0, u0=0, v0=0):
    W = np.asarray(W, dtype=np.int32)
    n = W.shape[0]

    def vec(x):
        return np.broadcast_to(np.asarray(x, dtype=np.int64), (n,)).copy()

    return dict(weights=W,
                params=np.array([weight_exp, num_weight_bits, num_message_bits,
                                 du, dv, vth], dtype=np.int64),
                bias_mant=vec(bias_mant), bias_exp=vec(bias_exp), u0=vec(u0), v0=vec(v0))


def build_configs():
    cfgs = []

    def add(name, seed, note, fn):
        rng = np.random.default_rng(seed)
        S, l1, l2 = fn(rng)
        S = np.asarray(S, dtype=np.int32)
        L1, L2 = _layer(**l1), _layer(**l2)
        T, n_in = S.shape
        hid, n_out = L1["weights"].shape[0], L2["weights"].shape[0]
        assert L1["weights"].shape == (hid, n_in) and L2["weights"].shape == (n_out, hid)
        assert 8 <= n_in <= 12 and 6 <= hid <= 10 and 4 <= n_out <= 8, name
        assert 100 <= T <= 120, name
        cfgs.append(dict(name=name, seed=seed, note=note, in_spikes=S, layers=(L1, L2)))

    # 1. binary input, mixed weights in both layers.
    add("bin_mixed", 201,
        "binary input, mixed weights in both layers, default exps/bits",
        lambda r: (_bern(r, 110, 10, 0.3),
                   dict(W=r.integers(-120, 256, (8, 10)), du=1000, dv=600, vth=2500,
                        bias_mant=r.integers(-50, 100, 8)),
                   dict(W=r.integers(-200, 256, (6, 8)), du=1500, dv=800, vth=300,
                        bias_mant=r.integers(-30, 60, 6))))

    # 2. inhibitory second layer: layer-2 neurons driven by a positive bias,
    #    layer-1 spikes suppress them.
    add("inh_layer2", 202,
        "excitatory layer 1; layer 2 all weights <= 0 (INHIBITORY) with positive bias",
        lambda r: (_bern(r, 100, 9, 0.35),
                   dict(W=r.integers(0, 256, (7, 9)), du=1200, dv=700, vth=4000,
                        bias_mant=r.integers(0, 60, 7)),
                   dict(W=-r.integers(0, 256, (5, 7)), du=800, dv=900, vth=300,
                        bias_mant=r.integers(1500, 4096, 5), bias_exp=4)))

    # 3. graded input on layer 1, binary layer 2.
    def graded(r):
        T, n_in = 115, 12
        S = np.where(r.random((T, n_in)) < 0.3, r.integers(1, 256, (T, n_in)), 0)
        l1 = dict(W=r.integers(-100, 256, (9, n_in)), num_message_bits=8, weight_exp=-6,
                  du=800, dv=500, vth=8000, bias_mant=r.integers(-100, 400, 9), bias_exp=1)
        l2 = dict(W=r.integers(-150, 256, (7, 9)), du=1000, dv=700, vth=1000,
                  bias_mant=r.integers(-40, 40, 7))
        return S, l1, l2
    add("graded_l1", 203,
        "layer 1 graded (num_message_bits=8, payload 1..255, weight_exp=-6); layer 2 binary",
        graded)

    # 4. negative weight_exp and num_weight_bits < 8 on layer 2.
    add("l2_wexp_neg_nwb5", 204,
        "layer 2: weight_exp=-2, num_weight_bits=5, mixed odd weights (floor shifts)",
        lambda r: (_bern(r, 105, 11, 0.3),
                   dict(W=r.integers(-100, 256, (10, 11)), du=900, dv=500, vth=3000,
                        bias_mant=r.integers(-50, 120, 10)),
                   dict(W=2 * r.integers(-64, 128, (8, 10)) + 1, weight_exp=-2,
                        num_weight_bits=5, du=700, dv=400, vth=400,
                        bias_mant=r.integers(-20, 30, 8))))

    # 5. random initial state and per-neuron bias in both layers.
    add("random_state_bias", 205,
        "random u0/v0 (+-2^21) and per-neuron bias_mant/bias_exp in both layers",
        lambda r: (_bern(r, 120, 8, 0.25),
                   dict(W=r.integers(-255, 256, (10, 8)), weight_exp=2, du=300, dv=250,
                        vth=8000, bias_mant=r.integers(-4096, 4096, 10),
                        bias_exp=r.integers(0, 7, 10),
                        u0=r.integers(-2**21, 2**21, 10), v0=r.integers(-2**21, 2**21, 10)),
                   dict(W=r.integers(-255, 256, (4, 10)), weight_exp=3, du=400, dv=300,
                        vth=10000, bias_mant=r.integers(-4096, 4096, 4),
                        bias_exp=r.integers(0, 7, 4),
                        u0=r.integers(-2**21, 2**21, 4), v0=r.integers(-2**21, 2**21, 4))))
    return cfgs


# --------------------------------------------------------------------------
# Lava run
# --------------------------------------------------------------------------
def run_lava(cfg):
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    S = cfg["in_spikes"]
    T = S.shape[0]
    src = Source(data=S.T.astype(np.int32).copy())
    port = src.s_out
    lifs, sinks = [], []
    for L in cfg["layers"]:
        W = L["weights"]
        wexp, nwb, nmb, du, dv, vth = (int(x) for x in L["params"])
        dense = Dense(weights=W.astype(np.int32).copy(), weight_exp=wexp,
                      num_weight_bits=nwb, num_message_bits=nmb)
        lif = LIF(shape=(W.shape[0],), du=du, dv=dv, vth=vth,
                  bias_mant=L["bias_mant"].astype(np.int32),
                  bias_exp=L["bias_exp"].astype(np.int32),
                  u=L["u0"].astype(np.int32), v=L["v0"].astype(np.int32))
        sink = Sink(shape=(W.shape[0],), buffer=T)
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        port = lif.s_out
        lifs.append(lif)
        sinks.append(sink)

    rec = [{k: np.zeros((T, lif.a_in.shape[0]), np.int64) for k in "uvs"} for lif in lifs]
    cfg_run = Loihi2SimCfg(select_tag="fixed_pt")
    top = lifs[-1]
    try:
        for k in range(T):
            top.run(condition=RunSteps(num_steps=1), run_cfg=cfg_run)
            for lif, sink, r in zip(lifs, sinks, rec, strict=True):
                r["u"][k] = _exact_int(lif.u.get())
                r["v"][k] = _exact_int(lif.v.get())
                r["s"][k] = _exact_int(sink.data.get()[:, k])
        s_final = [_exact_int(sink.data.get()).T for sink in sinks]
    finally:
        top.stop()
    for i, (r, sf) in enumerate(zip(rec, s_final, strict=True), 1):
        where = f"{cfg['name']} layer{i}"
        if not np.array_equal(sf, r["s"]):
            raise RuntimeError(f"{where}: per-step sink reads != final sink buffer")
        if not np.isin(r["s"], (0, 1)).all():
            raise RuntimeError(f"{where}: non-binary spikes {np.unique(r['s'])}")
        if (r["v"][r["s"] == 1] != 0).any():
            raise RuntimeError(f"{where}: spike recorded but v not reset")
    return rec


def main():
    from importlib.metadata import version

    import lava  # noqa: F401  (fail early outside the Lava venv)
    lava_ver = version("lava-nc")
    only = set(sys.argv[1:])
    out = {}
    t_all = time.perf_counter()
    for cfg in build_configs():
        if only and cfg["name"] not in only:
            continue
        t0 = time.perf_counter()
        rec = run_lava(cfg)
        name = cfg["name"]
        S = cfg["in_spikes"]
        out[f"{name}.in_spikes"] = S.astype(np.int32)
        desc = []
        for i, (L, r) in enumerate(zip(cfg["layers"], rec, strict=True), 1):
            pre = f"{name}.layer{i}"
            out[f"{pre}.weights"] = L["weights"].astype(np.int32)
            for key in LAYER_KEYS[1:]:
                out[f"{pre}.{key}"] = L[key].astype(np.int64)
            for key in "uvs":
                out[f"{pre}.{key}"] = r[key]
            desc.append(f"L{i}[{L['weights'].shape[0]:2d}] spikes={int(r['s'].sum()):4d} "
                        f"|u|max={int(np.abs(r['u']).max()):8d}")
        print(f"{name:18s} T={S.shape[0]:3d} n_in={S.shape[1]:2d} in_events="
              f"{int((S != 0).sum()):4d}  " + "  ".join(desc) +
              f"  {time.perf_counter() - t0:4.1f}s", flush=True)
    write_golden(out, OUT, lava_ver, only, t_all)


if __name__ == "__main__":
    main()
