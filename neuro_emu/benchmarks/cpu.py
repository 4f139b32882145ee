"""The CPU's benchmark label, from the standard library alone: ``bench/lava_timing.py`` loads this
file by path under Lava's own Python, where neither torch nor neuro_emu is installed."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cpu_label() -> str:
    """A file-name-safe name for this CPU, e.g. ``cpu-amd-epyc-7763-64-core-avx2-2cores``.

    The widest x86 vector extension (``avx512`` or ``avx2``) is part of it: a virtual machine may
    show only "AMD EPYC" for different generations, and timings from one do not stand for the
    other."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1]
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    # Drop the marketing noise so the name stays short: "Intel(R) Xeon(R) ... CPU @ 2.90GHz".
    model = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|@.*$", " ", model, flags=re.IGNORECASE)
    vector = next((f"{isa}-" for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"))
                   if flag in flags), "")
    return f"cpu-{slug(model)}-{vector}{os.cpu_count()}cores"


def slug(text: str) -> str:
    """``text`` lower-cased, runs of anything but letters and digits as one '-', at most 48."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "unknown"
