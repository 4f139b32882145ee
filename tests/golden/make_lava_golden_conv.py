#!/usr/bin/env python3
"""Generate golden Conv -> LIF vectors from Lava's fixed-point CPU models.

Runs ONLY under a Python 3.10 venv with lava-nc==0.10.0 (see make_lava_golden.py):

    /tmp/lava310/bin/python tests/golden/make_lava_golden_conv.py         # writes the file
    /tmp/lava310/bin/python tests/golden/make_lava_golden_conv.py NAME    # dry run, writes nothing

Two kinds of config, both with Loihi2SimCfg(select_tag="fixed_pt") and the LIF of
make_lava_golden.py, advanced with RunSteps(num_steps=1) T times, u/v/sink read after each step:

- weight_handling "lava_conv": io.source.RingBuffer -> proc.conv.Conv -> LIF -> sink, i.e.
  Lava's PyConvModelFixed as it is (raw weights, weight_exp/num_weight_bits unused, 24-bit
  wrap of the sum). Lava's layouts differ from ours: its input is (X, Y, C) = our [C, H, W]
  transposed, its kernel (C_out, KX, KY, C_in/g) is applied as a true convolution (scipy's
  convolve2d flips it), and its stride/padding/dilation pairs are (X, Y). The conversion is
  done here, once (``to_lava_*``), so the file stores everything in our torch layout.
- weight_handling "loihi": the same convolution as a connectivity matrix M (built here with
  plain loops, torch's cross-correlation, flattened C-H-W order), run through Lava's
  bit-accurate Dense: RingBuffer -> Dense(M, weight_exp, num_weight_bits) -> LIF -> sink. That
  is Loihi's Dense weight handling (clip, truncation, weight exponent) on a conv's synapses.
  The sign mode Dense derives from M equals the kernel's: M is the kernel's values plus zeros.

Output: tests/golden/lava_conv_lif.npz (see README.md in this folder). Imports only numpy and
lava.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
from make_lava_golden import _exact_int

OUT = os.environ.get("NEURO_EMU_GOLDEN_OUT") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "lava_conv_lif.npz"
)
# Per config `<name>.params` holds these, in this order.
PARAM_ORDER = ("weight_exp", "num_weight_bits", "num_message_bits", "du", "dv", "vth", "groups",
               "stride_h", "stride_w", "padding_h", "padding_w", "dilation_h", "dilation_w")
VMAX = 2**23 - 1


def out_hw(h, w, kh, kw, stride, padding, dilation):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip((h, w), (kh, kw), stride, padding, dilation, strict=True))


def conv_matrix(W, in_shape, stride, padding, dilation, groups):
    """M [C_out*OH*OW, C_in*H*W] with (M @ x.ravel()) == conv2d(x, W) (cross-correlation)."""
    c_out, c_per_g, kh, kw = W.shape
    c_in, h, w = in_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    M = np.zeros((c_out, oh, ow, c_in, h, w), np.int64)
    for co in range(c_out):
        g = co // (c_out // groups)
        for ci in range(c_per_g):
            for ky in range(kh):
                for kx in range(kw):
                    for oy in range(oh):
                        iy = oy * stride[0] - padding[0] + ky * dilation[0]
                        if not 0 <= iy < h:
                            continue
                        for ox in range(ow):
                            ix = ox * stride[1] - padding[1] + kx * dilation[1]
                            if 0 <= ix < w:
                                M[co, oy, ox, g * c_per_g + ci, iy, ix] = W[co, ci, ky, kx]
    return M.reshape(c_out * oh * ow, c_in * h * w)


def to_lava_weight(W):
    """Our [C_out, C_in/g, KH, KW] (correlation) as Lava's (C_out, KX, KY, C_in/g) (convolution)."""
    return np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def to_lava_xyc(x):
    """Our [..., C, H, W] as Lava's [..., X, Y, C]."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -3))


# --------------------------------------------------------------------------
# configuration table
# --------------------------------------------------------------------------
def _cfg(name, seed, note, handling, *, W, S, stride=1, padding=0, dilation=1, groups=1,
         weight_exp=0, num_weight_bits=8, num_message_bits=0, du=0, dv=0, vth=10, bias_mant=0,
         bias_exp=0, u0=0, v0=0):
    def pair(x):
        return (x, x) if np.isscalar(x) else tuple(int(v) for v in x)

    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    T, c_in, h, w = S.shape
    c_out, _, kh, kw = W.shape
    assert W.shape[1] * groups == c_in and c_out % groups == 0, name
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    n = c_out * oh * ow
    assert 100 <= T <= 120 and n <= 160, (name, n)

    def per_neuron(x):
        # scalar, per channel [C_out], or per neuron [C_out, OH, OW]
        a = np.asarray(x, np.int64)
        if a.ndim == 1:
            a = a[:, None, None]
        return np.broadcast_to(a, (c_out, oh, ow)).copy()

    params = np.array([weight_exp, num_weight_bits, num_message_bits, du, dv, vth, groups,
                       *stride, *padding, *dilation], np.int64)
    return dict(name=name, seed=seed, note=note, handling=handling, weights=np.asarray(W),
                in_spikes=np.asarray(S), params=params, bias_mant=per_neuron(bias_mant),
                bias_exp=per_neuron(bias_exp), u0=per_neuron(u0), v0=per_neuron(v0))


def _bern(r, shape, p):
    return (r.random(shape) < p).astype(np.int64)


def build_configs():
    cfgs = []

    def add(name, seed, note, handling, fn):
        cfgs.append(_cfg(name, seed, note, handling, **fn(np.random.default_rng(seed))))

    # Lava's Conv process, as it is.
    add("conv_k3_p1_ignored_wexp", 201,
        "k3 s1 p1, mixed odd weights; weight_exp=3 and num_weight_bits=4 passed to Conv and "
        "ignored by it", "lava_conv",
        lambda r: dict(W=r.integers(-120, 121, (3, 2, 3, 3)), S=_bern(r, (100, 2, 5, 7), 0.3),
                       padding=1, weight_exp=3, num_weight_bits=4, du=900, dv=400, vth=60,
                       bias_mant=r.integers(-50, 50, 3)))
    add("conv_asym_geometry", 202,
        "non-square everything: KH=3 KW=2, H=8 W=7, stride (2,1), padding (1,0), dilation (1,2): "
        "pins down Lava's (X, Y) order and kernel flip", "lava_conv",
        lambda r: dict(W=r.integers(-100, 101, (3, 2, 3, 2)), S=_bern(r, (100, 2, 8, 7), 0.35),
                       stride=(2, 1), padding=(1, 0), dilation=(1, 2), du=700, dv=300, vth=40,
                       bias_mant=r.integers(-20, 40, (3, 4, 5))))
    add("conv_k5_s2_p2", 203,
        "k5 s2 p2 on 9x11 (odd sizes), per-channel du-shared LIF with random u0/v0", "lava_conv",
        lambda r: dict(W=r.integers(-80, 81, (2, 2, 5, 5)), S=_bern(r, (110, 2, 9, 11), 0.25),
                       stride=2, padding=2, du=1500, dv=600, vth=100,
                       u0=r.integers(-20000, 20000, (2, 5, 6)),
                       v0=r.integers(-5000, 5000, (2, 5, 6))))
    add("conv_depthwise_dil2", 204,
        "groups = C = 4 (depthwise), k3 dilation 2 padding 2 on 5x6", "lava_conv",
        lambda r: dict(W=r.integers(-150, 151, (4, 1, 3, 3)), S=_bern(r, (100, 4, 5, 6), 0.3),
                       padding=2, dilation=2, groups=4, du=1000, dv=500, vth=80,
                       bias_mant=[10, -10, 30, 0], bias_exp=2))
    add("conv_k1_groups2_s2", 205,
        "k1, groups=2, stride 2 on 7x9", "lava_conv",
        lambda r: dict(W=r.integers(-200, 201, (4, 2, 1, 1)), S=_bern(r, (100, 4, 7, 9), 0.4),
                       stride=2, groups=2, du=2000, dv=1000, vth=30))
    add("conv_inhibitory", 206,
        "inhibitory-only weights (raw, odd magnitudes kept), positive per-channel bias",
        "lava_conv",
        lambda r: dict(W=-r.integers(0, 200, (3, 2, 3, 3)), S=_bern(r, (100, 2, 6, 6), 0.3),
                       du=800, dv=700, vth=100, bias_mant=r.integers(1000, 4096, 3),
                       bias_exp=4))
    add("conv_graded", 207,
        "num_message_bits=8, payloads 1..255, k3 p1: a = W * payload", "lava_conv",
        lambda r: dict(W=r.integers(-60, 61, (2, 2, 3, 3)),
                       S=_bern(r, (100, 2, 6, 7), 0.3) * r.integers(1, 256, (100, 2, 6, 7)),
                       padding=1, num_message_bits=8, du=1200, dv=800, vth=30000,
                       bias_mant=r.integers(-200, 200, 2), bias_exp=3))
    add("conv_wrap24", 208,
        "raw weights ~2^19..2^21 (outside 8 bits, Lava keeps them): the sum passes 2^23 and "
        "wraps in 24 bits (signed_clamp); du=4095 so u = a << 6", "lava_conv",
        lambda r: dict(W=r.choice([-1, 1], (2, 2, 3, 3)) * r.integers(2**19, 2**21, (2, 2, 3, 3)),
                       S=_bern(r, (100, 2, 6, 6), 0.5), du=4095, dv=4095, vth=131071))
    add("conv_u_wrap_v_sat", 209,
        "du=-1 (u held), raw excitatory weights 600..1000 (kept by Conv): u wraps past 2^23; "
        "dv=0, vth large", "lava_conv",
        lambda r: dict(W=r.integers(600, 1001, (2, 1, 3, 3)), S=_bern(r, (100, 1, 6, 6), 0.5),
                       padding=1, du=-1, dv=0, vth=131071))
    add("conv_neg_bias_exp", 210,
        "per-neuron bias_exp -5..-1 with odd +/- mantissas (floor shift), k3 s2 on 9x9",
        "lava_conv",
        lambda r: dict(W=r.integers(-90, 91, (3, 2, 3, 3)), S=_bern(r, (100, 2, 9, 9), 0.3),
                       stride=2, du=300, dv=50, vth=40,
                       bias_mant=2 * r.integers(-2048, 2047, (3, 4, 4)) + 1,
                       bias_exp=r.integers(-5, 0, (3, 4, 4))))

    # Loihi's Dense weight handling on the convolution's connectivity.
    add("loihi_k3_mixed_odd", 221,
        "mixed odd weights (floored to even), weight_exp=1, k3 p1 on 5x7", "loihi",
        lambda r: dict(W=2 * r.integers(-128, 128, (3, 2, 3, 3)) + 1,
                       S=_bern(r, (100, 2, 5, 7), 0.3), padding=1, weight_exp=1, du=900,
                       dv=400, vth=120, bias_mant=r.integers(-50, 50, 3)))
    add("loihi_asym_nwb5_wexp_neg", 222,
        "num_weight_bits=5, weight_exp=-3, KH=5 KW=3, stride (1,2), padding (2,1), H=6 W=9",
        "loihi",
        lambda r: dict(W=r.integers(-256, 256, (3, 2, 5, 3)), S=_bern(r, (100, 2, 6, 9), 0.3),
                       stride=(1, 2), padding=(2, 1), num_weight_bits=5, weight_exp=-3, du=600,
                       dv=400, vth=30, bias_mant=r.integers(-20, 20, 3)))
    add("loihi_inh_nwb4", 223,
        "inhibitory-only, num_weight_bits=4 (magnitudes truncated toward zero), positive bias",
        "loihi",
        lambda r: dict(W=-r.integers(0, 256, (3, 2, 3, 3)), S=_bern(r, (100, 2, 6, 6), 0.3),
                       num_weight_bits=4, du=500, dv=700, vth=100,
                       bias_mant=r.integers(500, 3000, 3), bias_exp=5))
    add("loihi_clip_groups2", 224,
        "raw weights in [-400, 400] clipped to [-256, 255], groups=2, k3 s2 p1 dilation 2, "
        "weight_exp=-1", "loihi",
        lambda r: dict(W=r.integers(-400, 401, (4, 1, 3, 3)), S=_bern(r, (100, 2, 9, 9), 0.3),
                       stride=2, padding=1, dilation=2, groups=2, weight_exp=-1, du=900,
                       dv=900, vth=100, bias_mant=r.integers(-100, 100, 4)))
    add("loihi_graded_depthwise", 225,
        "num_message_bits=8, payloads 1..255, weight_exp=-6, depthwise k5 p2", "loihi",
        lambda r: dict(W=r.integers(-255, 256, (3, 1, 5, 5)),
                       S=_bern(r, (100, 3, 5, 6), 0.3) * r.integers(1, 256, (100, 3, 5, 6)),
                       padding=2, groups=3, num_message_bits=8, weight_exp=-6, du=800, dv=500,
                       vth=400, bias_mant=r.integers(-200, 400, 3), bias_exp=1))
    add("loihi_exc_u_wrap", 226,
        "excitatory weights, weight_exp=3, du=20: u wraps past +2^23; dv=0 saturates v", "loihi",
        lambda r: dict(W=r.integers(100, 256, (2, 2, 1, 1)), S=_bern(r, (100, 2, 7, 7), 0.6),
                       weight_exp=3, du=20, dv=0, vth=131071))
    return cfgs


# --------------------------------------------------------------------------
# Lava run
# --------------------------------------------------------------------------
def run_lava(cfg):
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    W, S = cfg["weights"], cfg["in_spikes"]
    T = S.shape[0]
    p = dict(zip(PARAM_ORDER, (int(x) for x in cfg["params"]), strict=True))
    stride = (p["stride_h"], p["stride_w"])
    padding = (p["padding_h"], p["padding_w"])
    dilation = (p["dilation_h"], p["dilation_w"])
    c_out, oh, ow = cfg["u0"].shape
    syn_kw = dict(weight_exp=p["weight_exp"], num_weight_bits=p["num_weight_bits"],
                  num_message_bits=p["num_message_bits"])
    if cfg["handling"] == "lava_conv":
        # Our per-neuron [C, H, W] arrays <-> Lava's (X, Y, C).
        to_lava, from_lava = to_lava_xyc, to_lava_xyc
        src = Source(data=np.moveaxis(to_lava_xyc(S), 0, -1).astype(np.int32).copy())
        syn = Conv(weight=to_lava_weight(W).astype(np.int32), input_shape=src.s_out.shape,
                   stride=stride[::-1], padding=padding[::-1], dilation=dilation[::-1],
                   groups=p["groups"], **syn_kw)
        if tuple(syn.output_shape) != (ow, oh, c_out):
            raise RuntimeError(f"{cfg['name']}: Lava output shape {syn.output_shape}")
        shape = (ow, oh, c_out)
    else:
        def to_lava(x):
            return x.reshape(-1)

        def from_lava(x):
            return x.reshape(*x.shape[:-1], c_out, oh, ow)

        M = conv_matrix(W, S.shape[1:], stride, padding, dilation, p["groups"])
        src = Source(data=S.reshape(T, -1).T.astype(np.int32).copy())
        syn = Dense(weights=M.astype(np.int32), **syn_kw)
        shape = (M.shape[0],)
    lif = LIF(shape=shape, du=p["du"], dv=p["dv"], vth=p["vth"],
              **{k: to_lava(cfg[k0]).astype(np.int32) for k, k0 in
                 (("bias_mant", "bias_mant"), ("bias_exp", "bias_exp"), ("u", "u0"),
                  ("v", "v0"))})
    sink = Sink(shape=shape, buffer=T)
    src.s_out.connect(syn.s_in)
    syn.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)

    u = np.zeros((T, c_out, oh, ow), np.int64)
    v = np.zeros_like(u)
    s = np.zeros_like(u)
    try:
        for k in range(T):
            lif.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            u[k] = from_lava(_exact_int(lif.u.get()))
            v[k] = from_lava(_exact_int(lif.v.get()))
            s[k] = from_lava(_exact_int(sink.data.get()[..., k]))
        s_final = from_lava(np.moveaxis(_exact_int(sink.data.get()), -1, 0))
    finally:
        lif.stop()
    if not np.array_equal(s_final, s):
        raise RuntimeError(f"{cfg['name']}: per-step sink reads != final sink buffer")
    if not np.isin(s, (0, 1)).all() or (v[s == 1] != 0).any():
        raise RuntimeError(f"{cfg['name']}: non-binary spikes or a spike without reset")
    return u, v, s


def main():
    from importlib.metadata import version

    import lava  # noqa: F401  (fail early outside the Lava venv)
    lava_ver = version("lava-nc")
    only = set(sys.argv[1:])
    out = {}
    t_all = time.perf_counter()
    for cfg in build_configs():
        name = cfg["name"]
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        u, v, s = run_lava(cfg)
        vth_eff = int(cfg["params"][5]) << 6
        print(f"{name:26s} {cfg['handling']:9s} T={s.shape[0]} out={s.shape[1:]} "
              f"spikes={int(s.sum()):5d} |u|max={int(np.abs(u).max()):9d} "
              f"v==+-VMAX:{int((np.abs(v) == VMAX).sum()):5d} "
              f"v==vth<<6:{int((v == vth_eff).sum()):3d}  {time.perf_counter() - t0:4.1f}s",
              flush=True)
        out[f"{name}.weight_handling"] = np.array(cfg["handling"])
        out[f"{name}.weights"] = cfg["weights"].astype(np.int32)
        out[f"{name}.in_spikes"] = cfg["in_spikes"].astype(np.int16)
        out[f"{name}.params"] = cfg["params"]
        for key in ("bias_mant", "bias_exp", "u0", "v0"):
            out[f"{name}.{key}"] = cfg[key].astype(np.int32)
        # Lava's u and v are int32 Vars; s is 0/1.
        out[f"{name}.u"], out[f"{name}.v"] = u.astype(np.int32), v.astype(np.int32)
        out[f"{name}.s"] = s.astype(np.int8)
    if only:
        print("subset run: nothing written")
        return
    out["_meta.config_names"] = np.array(sorted({k.split(".")[0] for k in out}))
    out["_meta.param_order"] = np.array(PARAM_ORDER)
    out["_meta.lava_version"] = np.array(lava_ver)
    out["_meta.python_version"] = np.array(sys.version.split()[0])
    out["_meta.numpy_version"] = np.array(np.__version__)
    out["_meta.generated_utc"] = np.array(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), "
          f"{len(out['_meta.config_names'])} configs, Lava {time.perf_counter() - t_all:.1f}s")


if __name__ == "__main__":
    main()
