#!/usr/bin/env python3
"""Generate golden Dense -> LIF vectors from Lava's bit-accurate CPU models.

Runs ONLY under a Python 3.10 venv with lava-nc==0.10.0 (Lava does not import
on Python >= 3.11):

    PYENV_VERSION=3.10.13 python3.10 -m venv /tmp/lava310
    /tmp/lava310/bin/pip install --prefer-binary lava-nc==0.10.0
    /tmp/lava310/bin/python tests/golden/make_lava_golden.py

Network per config (Loihi2SimCfg(select_tag="fixed_pt") -> PySendModelFixed,
PyDenseModelBitAcc, PyLifModelBitAcc, PyReceiveModelFixed):

    io.source.RingBuffer(data=S.T) -> Dense(W, weight_exp, num_weight_bits,
        num_message_bits) -> LIF(shape=(n_out,), du, dv, vth, bias_mant,
        bias_exp, u=u0, v=v0) -> io.sink.RingBuffer(buffer=T)

The network is advanced with RunSteps(num_steps=1) T times; after each step
lif.u.get(), lif.v.get() and the sink column for that step are recorded. The
sink receives LIF.s_out in the same time step (no delay), so s[k] is the spike
the LIF emitted at (0-based) step k. The script cross-checks that
s[k] == 1 implies v[k] == 0 (post-reset) and that the per-step sink reads
equal the final sink buffer.

Output: tests/golden/lava_dense_lif.npz (see README.md in this folder).
This script must not import torch or neuro_emu.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

# NEURO_EMU_GOLDEN_OUT redirects the output: tests/test_loihi.py uses it to compare live.
OUT = os.environ.get("NEURO_EMU_GOLDEN_OUT") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "lava_dense_lif.npz"
)

PARAM_ORDER = ("weight_exp", "num_weight_bits", "num_message_bits", "du", "dv", "vth")
VMAX = 2**23 - 1


# --------------------------------------------------------------------------
# configuration table
# --------------------------------------------------------------------------
def _bern(rng, T, n_in, p):
    return (rng.random((T, n_in)) < p).astype(np.int32)


def _cfg(name, seed, note, *, W, S, weight_exp=0, num_weight_bits=8,
         num_message_bits=0, du=0, dv=0, vth=10, bias_mant=0, bias_exp=0,
         u0=0, v0=0):
    n_out, n_in = W.shape
    T = S.shape[0]
    assert S.shape == (T, n_in)
    assert 5 <= n_in <= 16 and 4 <= n_out <= 12 and 100 <= T <= 120, name

    def vec(x, dt=np.int64):
        a = np.broadcast_to(np.asarray(x, dtype=dt), (n_out,)).copy()
        return a

    return dict(
        name=name, seed=seed, note=note,
        weights=np.asarray(W, dtype=np.int32),
        in_spikes=np.asarray(S, dtype=np.int32),
        params=np.array([weight_exp, num_weight_bits, num_message_bits,
                         du, dv, vth], dtype=np.int64),
        bias_mant=vec(bias_mant), bias_exp=vec(bias_exp),
        u0=vec(u0), v0=vec(v0),
    )


def build_configs():
    cfgs = []

    def add(name, seed, note, fn):
        rng = np.random.default_rng(seed)
        cfgs.append(_cfg(name, seed, note, **fn(rng)))

    # 1. u wrap-around, positive: big excitatory drive, weak u decay.
    add("u_wrap_pos", 101,
        "excitatory 150..255, weight_exp=3, du=20: u driven past +2^23 and wraps",
        lambda r: dict(W=r.integers(150, 256, (6, 12)), S=_bern(r, 110, 12, 0.5),
                       weight_exp=3, du=20, dv=100, vth=5000))

    # 2. u wrap-around, negative: big inhibitory drive, positive per-neuron bias.
    add("u_wrap_neg", 102,
        "inhibitory -255..-150, weight_exp=3, du=10: u driven past -2^23 and wraps",
        lambda r: dict(W=-r.integers(150, 256, (5, 10)), S=_bern(r, 105, 10, 0.5),
                       weight_exp=3, du=10, dv=300, vth=1000,
                       bias_mant=r.integers(0, 4096, 5), bias_exp=3))

    # 3. exact u = +/-2^23 edges with du=-1 (u held exactly).
    def u_edge(r):
        T, n_in, n_out = 100, 5, 6
        W = np.zeros((n_out, n_in), np.int64)
        W[0, 0] = 128          # a = 128<<10 = 2^17 -> a<<6 = 2^23
        W[1, 0] = -128         # -> u = -2^23 -> wrapped to +2^23
        W[2, :2] = 64
        W[3, :2] = -64
        W[4, 2] = 2            # a<<6 = 2^17
        W[5, 3] = -2
        S = np.zeros((T, n_in), np.int32)
        S[0, 0] = 1            # first kick at step 0 (arrives at step 1)
        S[40, 0] = 1           # second kick: 2^23 + 2^23 -> wraps to 0
        S[60, 1] = 1
        S[[10, 30], 2] = 1
        S[[10, 30], 3] = 1
        S[80:, 4] = _bern(r, 20, 1, 0.5)[:, 0]
        u0 = np.array([0, 0, 0, 0, 2**23 - 2**17, -(2**23) + 2**17])
        return dict(W=W, S=S, weight_exp=10, du=-1, dv=4095, vth=131071,
                    bias_mant=[-4096, 0, -2048, 0, -4096, 0], bias_exp=[7, 0, 7, 0, 7, 0],
                    u0=u0)
    add("u_edge_2p23", 103,
        "du=-1, single kicks of exactly 2^23: u == +2^23 is kept (strict >), "
        "u == -2^23 wraps to +2^23, 2^23+2^23 wraps to 0", u_edge)

    # 4. single-wrap overshoot: |u_decayed + a<<6| > 3*2^23 leaves 24-bit range.
    def overshoot(r):
        W = r.integers(200, 256, (4, 6))
        S = _bern(r, 100, 6, 0.35)
        return dict(W=W, S=S, weight_exp=10, du=4095, dv=4095, vth=131071,
                    bias_mant=[0, -4096, 100, 0], bias_exp=[0, 7, 3, 0])
    add("u_wrap_overshoot", 104,
        "a<<6 up to ~2^25 (weight_exp=10): Lava wraps only ONCE (+-2^24), so u can "
        "leave the 24-bit range; v saturates", overshoot)

    # 5. v saturation, negative.
    add("v_sat_neg", 105,
        "strong inhibitory input + negative bias, dv=0: v pinned at -(2^23-1)",
        lambda r: dict(W=-r.integers(100, 256, (5, 8)), S=_bern(r, 100, 8, 0.4),
                       weight_exp=1, du=400, dv=0, vth=500,
                       bias_mant=r.integers(-4096, 0, 5), bias_exp=6,
                       v0=r.integers(-2**22, 2**22, 5)))

    # 6. v saturation, positive, with vth = 131071 (max 17-bit): v clips to
    #    2^23-1 = 8388607 > vth<<6 = 8388544 so saturated neurons spike.
    add("v_sat_pos_spike", 106,
        "strong excitatory input + bias, vth=131071, dv=0: v clips to 2^23-1 then spikes",
        lambda r: dict(W=r.integers(100, 256, (6, 8)), S=_bern(r, 110, 8, 0.5),
                       weight_exp=4, du=100, dv=0, vth=131071,
                       bias_mant=r.integers(0, 4096, 6), bias_exp=7))

    # 7. v saturation, positive, visible in the trace: vth = 2^17 (ONE above the
    #    documented 17-bit range; Lava does not check) -> vth<<6 = 2^23 > 2^23-1.
    add("v_sat_pos_vth_2p17", 107,
        "OUT OF SPEC vth=131072 (2^17): v pinned at +(2^23-1) and can never spike",
        lambda r: dict(W=r.integers(100, 256, (4, 6)), S=_bern(r, 100, 6, 0.5),
                       weight_exp=2, du=200, dv=10, vth=131072,
                       bias_mant=r.integers(1000, 4096, 4), bias_exp=5))

    # 8. negative currents / voltages (moderate, no saturation).
    add("neg_currents", 108,
        "mostly-negative mixed weights + negative bias: u, v negative; sparse spikes",
        lambda r: dict(W=r.integers(-200, 60, (8, 10)), S=_bern(r, 110, 10, 0.3),
                       du=800, dv=600, vth=60,
                       bias_mant=r.integers(-800, 3000, 8), bias_exp=3,
                       v0=r.integers(-5000, 5000, 8)))

    # 9-11. decay extremes.
    add("du_dv_zero", 109,
        "du=0 (u factor 4095/4096), dv=0 (no v leak), mixed weights",
        lambda r: dict(W=r.integers(-120, 121, (6, 9)), S=_bern(r, 100, 9, 0.2),
                       du=0, dv=0, vth=2000, bias_mant=r.integers(-50, 51, 6),
                       u0=r.integers(-3000, 3000, 6)))
    add("du_dv_4095", 110,
        "du=4095 (u fully decays: u = a<<6), dv=4095 (v factor 1/4096)",
        lambda r: dict(W=r.integers(-200, 256, (7, 11)), S=_bern(r, 100, 11, 0.4),
                       du=4095, dv=4095, vth=300, bias_mant=r.integers(0, 300, 7),
                       bias_exp=4, u0=r.integers(-50000, 50000, 7),
                       v0=r.integers(-50000, 50000, 7)))
    add("du_neg1", 111,
        "du=-1 (lava-dl netx iDecay=0: u never decays), dv=200, balanced mixed weights",
        lambda r: dict(W=r.integers(-60, 61, (8, 12)), S=_bern(r, 120, 12, 0.25),
                       du=-1, dv=200, vth=800, bias_mant=r.integers(-100, 100, 8),
                       u0=r.integers(-20000, 20000, 8)))

    # 12-13. bias exponents.
    add("bias_exp_large", 112,
        "per-neuron bias_exp 4..7 with |bias_mant| up to 4095 (bias up to 524160)",
        lambda r: dict(W=r.integers(-100, 101, (8, 7)), S=_bern(r, 100, 7, 0.3),
                       du=1000, dv=1500, vth=4000,
                       bias_mant=r.integers(-4096, 4096, 8), bias_exp=r.integers(4, 8, 8)))
    add("bias_exp_negative", 113,
        "per-neuron bias_exp -6..-1 with odd +/- mantissas (floor shift, e.g. -3>>1=-2)",
        lambda r: dict(W=r.integers(-50, 80, (10, 8)), S=_bern(r, 110, 8, 0.3),
                       du=300, dv=50, vth=40,
                       bias_mant=2 * r.integers(-2048, 2047, 10) + 1,
                       bias_exp=r.integers(-6, 0, 10)))

    # 14-15. negative weight exponents (floor shift of the accumulated sum).
    add("weight_exp_neg_mixed", 114,
        "weight_exp=-3, mixed odd weights: a = floor(W@s / 8)",
        lambda r: dict(W=r.integers(-255, 256, (9, 14)), S=_bern(r, 100, 14, 0.3),
                       weight_exp=-3, du=600, dv=400, vth=30,
                       bias_mant=r.integers(-20, 20, 9)))
    add("weight_exp_neg_inh", 115,
        "weight_exp=-2, inhibitory weights: floor(-5/4) = -2 (toward -inf)",
        lambda r: dict(W=-r.integers(1, 40, (6, 9)), S=_bern(r, 100, 9, 0.4),
                       weight_exp=-2, du=900, dv=300, vth=50,
                       bias_mant=r.integers(100, 600, 6), bias_exp=4))

    # 16-19. num_weight_bits < 8 for each sign mode.
    add("nwb5_mixed", 116,
        "num_weight_bits=5, mixed: LSBs cleared (tb = 8-5+1 = 4), toward -inf",
        lambda r: dict(W=r.integers(-256, 256, (7, 10)), S=_bern(r, 100, 10, 0.3),
                       num_weight_bits=5, weight_exp=1, du=700, dv=500, vth=150,
                       bias_mant=r.integers(-100, 300, 7)))
    add("nwb3_exc", 117,
        "num_weight_bits=3, excitatory: weights floored to multiples of 32",
        lambda r: dict(W=r.integers(0, 256, (6, 8)), S=_bern(r, 100, 8, 0.3),
                       num_weight_bits=3, du=500, dv=800, vth=200,
                       bias_mant=r.integers(-200, 200, 6)))
    add("nwb4_inh", 118,
        "num_weight_bits=4, inhibitory: magnitudes truncated to multiples of 16 "
        "(toward zero), positive bias",
        lambda r: dict(W=-r.integers(0, 256, (6, 9)), S=_bern(r, 100, 9, 0.3),
                       num_weight_bits=4, du=500, dv=700, vth=100,
                       bias_mant=r.integers(500, 3000, 6), bias_exp=5))
    add("nwb1_mixed", 119,
        "num_weight_bits=1, mixed: tb=8, weights floored to {-256, 0}",
        lambda r: dict(W=r.integers(-256, 256, (5, 6)), S=_bern(r, 100, 6, 0.4),
                       num_weight_bits=1, du=2000, dv=1000, vth=20,
                       bias_mant=r.integers(0, 2000, 5), bias_exp=4))

    # 20-23. sign modes (default num_weight_bits=8).
    add("inhibitory_only", 120,
        "all weights <= 0 (INHIBITORY, odd weights kept), positive bias drives spikes",
        lambda r: dict(W=-r.integers(0, 256, (8, 12)), S=_bern(r, 110, 12, 0.2),
                       du=1200, dv=900, vth=100,
                       bias_mant=r.integers(1000, 4096, 8), bias_exp=4))
    add("excitatory_only", 121,
        "all weights >= 0 (EXCITATORY, odd weights kept)",
        lambda r: dict(W=r.integers(0, 256, (9, 13)), S=_bern(r, 110, 13, 0.15),
                       du=1500, dv=700, vth=250))
    add("mixed", 122,
        "mixed-sign odd weights (MIXED: odd weights floored to even, -3 -> -4)",
        lambda r: dict(W=2 * r.integers(-128, 128, (10, 16)) + 1, S=_bern(r, 120, 16, 0.25),
                       du=1100, dv=600, vth=120, bias_mant=r.integers(-30, 90, 10)))
    add("mixed_clip_out_of_range", 123,
        "raw weights in [-400, 400] (outside 8-bit): clipped to [-256, 255] then "
        "truncated; weight_exp=-1",
        lambda r: dict(W=r.integers(-400, 401, (6, 10)), S=_bern(r, 100, 10, 0.3),
                       weight_exp=-1, du=900, dv=900, vth=100,
                       bias_mant=r.integers(-100, 100, 6)))

    # 24-25. graded spikes.
    def graded(r, T, n_in, n_out, p, lo, hi, nmb, wexp, vth):
        S = np.where(r.random((T, n_in)) < p, r.integers(lo, hi + 1, (T, n_in)), 0)
        return dict(W=r.integers(-255, 256, (n_out, n_in)), S=S,
                    num_message_bits=nmb, weight_exp=wexp, du=800, dv=500, vth=vth,
                    bias_mant=r.integers(-200, 400, n_out), bias_exp=1)
    add("graded_msg8", 124,
        "num_message_bits=8, payloads 1..255, mixed weights, weight_exp=-6: a = floor(W@p/64)",
        lambda r: graded(r, 110, 12, 8, 0.3, 1, 255, 8, -6, 400))
    add("graded_msg8_wexp0", 125,
        "num_message_bits=8, payloads 1..255, weight_exp=0 (large a, up to ~2^20)",
        lambda r: graded(r, 100, 7, 5, 0.15, 1, 255, 8, 0, 60000))

    # 26-27. threshold exactly reached (strict >).
    def exact(r):
        T, n_in, n_out = 100, 6, 8
        W = np.zeros((n_out, n_in), np.int64)
        W[7, 0] = 10           # a = 10 -> u = 640 = vth<<6 in one step (du=4095)
        W[6, 1] = 5            # two spikes of 320 -> 640
        S = _bern(r, T, n_in, 0.15)
        return dict(W=W, S=S, du=4095, dv=0, vth=10,
                    bias_mant=[64, 128, 320, 640, 63, 65, 0, 0], bias_exp=0,
                    v0=[0, 0, 0, 0, 0, 0, 0, 0])
    add("vth_exact", 126,
        "du=4095, dv=0, vth=10 (vth<<6=640): biases 64/128/320/640 and inputs of "
        "exactly 640 land v == 640 (no spike), next increment spikes", exact)
    add("vth_exact_dv", 127,
        "du=4095, dv=2048, bias 318..325: v converges; bias 321 lands v == 640 then 641",
        lambda r: dict(W=np.zeros((8, 5), np.int64), S=_bern(r, 100, 5, 0.3),
                       du=4095, dv=2048, vth=10, bias_mant=np.arange(318, 326)))
    add("vth_zero", 128,
        "vth=0: spike iff v > 0 (v == 0 does not spike), mixed weights",
        lambda r: dict(W=r.integers(-100, 101, (6, 7)), S=_bern(r, 100, 7, 0.3),
                       du=2000, dv=2000, vth=0, bias_mant=[0, 0, -1, 1, -64, 64]))

    # 28. random initial state.
    add("random_u0_v0", 129,
        "random u0 in +-2^22 and v0 in +-2^22, per-neuron bias, mixed weights",
        lambda r: dict(W=r.integers(-255, 256, (12, 16)), S=_bern(r, 120, 16, 0.2),
                       weight_exp=1, du=300, dv=250, vth=20000,
                       bias_mant=r.integers(-4096, 4096, 12), bias_exp=r.integers(0, 8, 12),
                       u0=r.integers(-2**22, 2**22, 12), v0=r.integers(-2**22, 2**22, 12)))

    # 29-31. Lava's int32 arithmetic: a_in, u, v and the bias are int32 in the LIF model and the
    #        graded W @ s is an int32 dot, so sums past 2^31 wrap.
    add("a_in_int32_wrap", 130,
        "weight_exp=18: |a_in| up to ~2^26, so a_in << 6 wraps in int32; du=300 keeps some u",
        lambda r: dict(W=r.integers(-256, 256, (8, 10)), S=_bern(r, 100, 10, 0.4),
                       weight_exp=18, du=300, dv=400, vth=20000,
                       bias_mant=r.integers(-4096, 4096, 8), bias_exp=r.integers(0, 8, 8),
                       u0=r.integers(-2**31, 2**31, 8), v0=r.integers(-2**31, 2**31, 8)))
    add("uv_int32_sum_wrap", 131,
        "u0, v0 near +-2^31 with du=-1, dv=0: decayed u + a_in << 6 and v + u + bias "
        "wrap in int32 (then u wraps by 2^24 once, v saturates)",
        lambda r: dict(W=r.integers(0, 256, (6, 7)), S=_bern(r, 100, 7, 0.5),
                       weight_exp=12, du=-1, dv=0, vth=1000,
                       bias_mant=4095, bias_exp=7,
                       u0=r.choice([1, -1], 6) * (2**31 - r.integers(1, 2**20, 6)),
                       v0=r.choice([1, -1], 6) * (2**31 - r.integers(1, 2**18, 6))))
    add("graded_int32_dot", 132,
        "num_message_bits=24, payloads +-2^23, weight_exp=-9: Dense's int32 W.dot(s) wraps "
        "before the floor shift",
        lambda r: dict(W=r.integers(-256, 256, (8, 10)),
                       S=np.where(r.random((100, 10)) < 0.5,
                                  r.integers(-2**23, 2**23 + 1, (100, 10)), 0),
                       num_message_bits=24, weight_exp=-9, du=1000, dv=2047, vth=50000,
                       bias_mant=r.integers(-4096, 4096, 8), bias_exp=3))
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

    W, S = cfg["weights"], cfg["in_spikes"]
    T = S.shape[0]
    n_out = W.shape[0]
    wexp, nwb, nmb, du, dv, vth = (int(x) for x in cfg["params"])

    src = Source(data=S.T.astype(np.int32).copy())
    dense = Dense(weights=W.astype(np.int32).copy(), weight_exp=wexp,
                  num_weight_bits=nwb, num_message_bits=nmb)
    lif = LIF(shape=(n_out,), du=du, dv=dv, vth=vth,
              bias_mant=cfg["bias_mant"].astype(np.int32),
              bias_exp=cfg["bias_exp"].astype(np.int32),
              u=cfg["u0"].astype(np.int32), v=cfg["v0"].astype(np.int32))
    sink = Sink(shape=(n_out,), buffer=T)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)

    u = np.zeros((T, n_out), np.int64)
    v = np.zeros((T, n_out), np.int64)
    s = np.zeros((T, n_out), np.int64)
    cfg_run = Loihi2SimCfg(select_tag="fixed_pt")
    try:
        for k in range(T):
            lif.run(condition=RunSteps(num_steps=1), run_cfg=cfg_run)
            u[k] = _exact_int(lif.u.get())
            v[k] = _exact_int(lif.v.get())
            s[k] = _exact_int(sink.data.get()[:, k])
        s_final = _exact_int(sink.data.get()).T
    finally:
        lif.stop()
    if not np.array_equal(s_final, s):
        raise RuntimeError(f"{cfg['name']}: per-step sink reads != final sink buffer")
    if not np.isin(s, (0, 1)).all():
        raise RuntimeError(f"{cfg['name']}: non-binary spikes {np.unique(s)}")
    if (v[s == 1] != 0).any():
        raise RuntimeError(f"{cfg['name']}: spike recorded but v not reset")
    return u, v, s


def _exact_int(x):
    a = np.asarray(x)
    r = np.rint(a).astype(np.int64)
    if not np.array_equal(r, a):
        raise RuntimeError("non-integer value read back from Lava")
    return r


def main():
    from importlib.metadata import version

    import lava  # noqa: F401  (fail early outside the Lava venv)
    lava_ver = version("lava-nc")
    cfgs = build_configs()
    only = set(sys.argv[1:])
    out = {}
    t_all = time.perf_counter()
    for cfg in cfgs:
        if only and cfg["name"] not in only:
            continue
        t0 = time.perf_counter()
        u, v, s = run_lava(cfg)
        dt = time.perf_counter() - t0
        name = cfg["name"]
        vth_eff = int(cfg["params"][5]) << 6
        print(f"{name:26s} T={s.shape[0]:3d} n_in={cfg['weights'].shape[1]:2d} "
              f"n_out={s.shape[1]:2d} spikes={int(s.sum()):4d} "
              f"|u|max={int(np.abs(u).max()):9d} v==+-VMAX:{int((np.abs(v) == VMAX).sum()):4d} "
              f"v==vth<<6&no-spike:{int(((v == vth_eff) & (s == 0)).sum()):3d}  {dt:4.1f}s",
              flush=True)
        out[f"{name}.weights"] = cfg["weights"].astype(np.int32)
        out[f"{name}.in_spikes"] = cfg["in_spikes"].astype(np.int32)
        out[f"{name}.params"] = cfg["params"].astype(np.int64)
        for key in ("bias_mant", "bias_exp", "u0", "v0"):
            out[f"{name}.{key}"] = cfg[key].astype(np.int64)
        out[f"{name}.u"], out[f"{name}.v"], out[f"{name}.s"] = u, v, s
    write_golden(out, OUT, lava_ver, only, t_all)


def write_golden(out, path, lava_ver, only, t_all):
    """Add the _meta.* keys and save ``out`` to ``path``, unless only a subset of configs ran."""
    names = sorted({k.split(".")[0] for k in out})
    out["_meta.config_names"] = np.array(names)
    out["_meta.param_order"] = np.array(PARAM_ORDER)
    out["_meta.lava_version"] = np.array(lava_ver)
    out["_meta.python_version"] = np.array(sys.version.split()[0])
    out["_meta.numpy_version"] = np.array(np.__version__)
    out["_meta.generated_utc"] = np.array(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if not only:
        np.savez_compressed(path, **out)
        print(f"wrote {path} ({os.path.getsize(path)} bytes), {len(names)} configs, "
              f"Lava total {time.perf_counter() - t_all:.1f}s")
    else:
        print("subset run: nothing written")


if __name__ == "__main__":
    main()
