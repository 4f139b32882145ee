"""What a :class:`~neuro_emu.loihi.network.LoihiNetwork` would take on Loihi 2, and what its run
cost: neurons, synapses, synaptic memory, a core-count estimate, spikes, synaptic operations and an
energy estimate from cited per-operation figures.

Sources (every number below comes from one of them, or is derived from them as stated):

- [L2] "Loihi 2 - Intel", Open Neuromorphic (2021 onward),
  https://open-neuromorphic.org/neuromorphic-computing/hardware/loihi-2-intel/ : "128 fully
  asynchronous neuron cores", "A single Loihi 2 chip supports up to 1 million neurons and 120
  million synapses". (Intel's own brief, "Taking Neuromorphic Computing to the Next Level with
  Loihi 2", Intel Labs technology brief, 2021, is the primary source; we could not read its
  tables here, so we quote the page above.)
- [MEM] "Intel's new Loihi-2 chip uses 1 million neurons", fbhtechinfo (2021),
  https://fbhtechinfo.com/intels-new-loihi-2-chip-uses-1-million-neurons : "128 Kbyte of local
  SRAM is available for each core, but this can now be flexibly partitioned". A secondary,
  translated news source; treat the per-core memory as approximate.
- [E] G. Tang et al., "SENECA: building a fully digital neuromorphic processor, design
  trade-offs and challenges", Front. Neurosci. 17, 2023, doi:10.3389/fnins.2023.1187252, Table 3
  (https://pmc.ncbi.nlm.nih.gov/articles/PMC10326429/table/T3/): energy per synaptic operation
  "Loihi (Davies et al., 2018): 23.6 pJ", "Loihi2 (Davis, 2021): NA", with the caveat that a
  synaptic operation "varies in different applications and is only mentioned for high-level
  comparison". This is **Loihi 1's** figure (14 nm; M. Davies et al., "Loihi: a neuromorphic
  manycore processor with on-chip learning", IEEE Micro 38(1), 2018); no per-operation energy of
  Loihi 2 is published in the sources we found.

Per-core limits, derived: neurons 1,000,000 / 128 = 7,812 and synapses 120,000,000 / 128 =
937,500 per core ([L2], chip totals divided evenly: the real per-core limits depend on how a core's
memory is partitioned), and 128 KB = 1,048,576 bits of memory per core ([MEM]). Spike energy and
neuron-update energy: unknown (not in these sources); spikes and neuron updates are counted, not
priced.

Encoding model for synaptic memory: a Dense projection stores its full matrix (Lava's Dense holds
``weights[n_out, n_in]``), ``n_out * n_in * num_weight_bits`` bits; a Conv projection without
weight sharing stores one weight per connection, ``connections * num_weight_bits``, and with
Loihi 2's shared convolution kernels ``C_out * C_in / groups * KH * KW * num_weight_bits`` (both
reported; the core estimate uses the first, the conservative one). Neuron state: u and v (24 bits
each) and a per-neuron bias mantissa (13 bits). Each layer is placed on cores of its own (as Lava
maps each process), so the network's estimate is the sum over layers of
``max(ceil(neurons / 7812), ceil(connections / 937500), ceil(memory bits / 1048576))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neuro_emu.loihi.network import LayerStats, LoihiNetwork

CHIP_CORES = 128  # [L2]
CHIP_NEURONS = 1_000_000  # [L2]
CHIP_SYNAPSES = 120_000_000  # [L2]
CORE_NEURONS = CHIP_NEURONS // CHIP_CORES  # derived: 7,812
CORE_SYNAPSES = CHIP_SYNAPSES // CHIP_CORES  # derived: 937,500
CORE_MEMORY_BITS = 128 * 1024 * 8  # [MEM], approximate
ENERGY_PER_SYNOP_PJ = 23.6  # [E], Loihi 1 (Davies et al. 2018)
STATE_BITS_PER_NEURON = 24 + 24 + 13  # u, v, bias mantissa
SOURCES = {
    "L2": "Open Neuromorphic, 'Loihi 2 - Intel', https://open-neuromorphic.org/"
          "neuromorphic-computing/hardware/loihi-2-intel/ (128 cores, 1M neurons, 120M synapses "
          "per chip)",
    "MEM": "fbhtechinfo, 'Intel's new Loihi-2 chip uses 1 million neurons' (2021), https://"
           "fbhtechinfo.com/intels-new-loihi-2-chip-uses-1-million-neurons (128 KB SRAM per core)",
    "E": "Tang et al., 'SENECA', Front. Neurosci. 2023, doi:10.3389/fnins.2023.1187252, "
         "Table 3, https://pmc.ncbi.nlm.nih.gov/articles/PMC10326429/table/T3/ (Loihi, Davies "
         "et al. 2018: 23.6 pJ per synaptic operation; Loihi 2: NA)",
}


@dataclass
class LayerResources:
    name: str
    neurons: int
    synapses: int  # nonzero stored weights (a conv kernel counted once)
    connections: int  # nonzero (pre, post) pairs, a conv expanded over positions
    synaptic_memory_bits: int  # dense matrices, conv expanded (no weight sharing)
    shared_kernel_bits: int  # the same with conv kernels stored once
    state_memory_bits: int
    cores: int
    spikes: int = 0
    synops: int = 0
    neuron_steps: int = 0


@dataclass
class ResourceReport:
    layers: list[LayerResources]
    samples: int  # images the counts were measured on (0: none run yet)
    timesteps: int
    steps_per_image: int
    sources: dict[str, str] = field(default_factory=lambda: dict(SOURCES))

    @property
    def cores(self) -> int:
        return sum(layer.cores for layer in self.layers)

    @property
    def chips(self) -> int:
        return math.ceil(self.cores / CHIP_CORES)

    def total(self, name: str) -> int:
        return sum(getattr(layer, name) for layer in self.layers)

    def per_image(self, name: str) -> float:
        return self.total(name) / self.samples if self.samples else float("nan")

    def energy_per_image_uj(self) -> float:
        """Synaptic operations only, at Loihi 1's 23.6 pJ each [E] (spike and neuron-update
        energies are unknown and left out)."""
        return self.per_image("synops") * ENERGY_PER_SYNOP_PJ * 1e-6

    def as_dict(self) -> dict:
        return {
            "samples": self.samples, "timesteps": self.timesteps,
            "steps_per_image": self.steps_per_image, "cores": self.cores, "chips": self.chips,
            "limits": {"core_neurons": CORE_NEURONS, "core_synapses": CORE_SYNAPSES,
                       "core_memory_bits": CORE_MEMORY_BITS, "chip_cores": CHIP_CORES},
            "energy_per_synop_pj": ENERGY_PER_SYNOP_PJ,
            "energy_per_image_uj": self.energy_per_image_uj(),
            "layers": [vars(layer) for layer in self.layers], "sources": self.sources,
        }

    def format(self) -> str:
        rows = [f"Loihi 2 resources (T={self.timesteps}, {self.steps_per_image} steps per image, "
                f"counts over {self.samples} images)",
                f"{'layer':<26}{'neurons':>9}{'synapses':>10}{'connections':>13}{'mem bits':>12}"
                f"{'shared bits':>12}{'cores':>6}{'spikes/img':>12}{'synops/img':>12}"]
        n = max(self.samples, 1)
        for q in self.layers:
            rows.append(f"{q.name[:25]:<26}{q.neurons:>9}{q.synapses:>10}{q.connections:>13}"
                        f"{q.synaptic_memory_bits + q.state_memory_bits:>12}"
                        f"{q.shared_kernel_bits + q.state_memory_bits:>12}{q.cores:>6}"
                        f"{q.spikes / n:>12.1f}{q.synops / n:>12.1f}")
        rows.append(f"total: {self.total('neurons')} neurons, {self.total('connections')} "
                    f"connections, {self.cores} cores ({self.chips} chip(s) of {CHIP_CORES}); "
                    f"limits per core: {CORE_NEURONS} neurons, {CORE_SYNAPSES} synapses (chip "
                    f"totals / 128 [L2]), {CORE_MEMORY_BITS} bits [MEM]")
        rows.append(f"energy: {self.per_image('synops'):.4g} synaptic ops/image x "
                    f"{ENERGY_PER_SYNOP_PJ} pJ (Loihi 1 [E]) = {self.energy_per_image_uj():.4g} "
                    "uJ/image; spike and neuron-update energy unknown, not included")
        rows += [f"[{key}] {text}" for key, text in self.sources.items()]
        return "\n".join(rows)


def _connections(weights: torch.Tensor, kind: str, source_shape: tuple[int, ...], stride: int,
                 padding: int, groups: int) -> int:
    nonzero = (weights != 0).to(torch.float64)
    if kind == "dense":
        return int(nonzero.sum())
    ones = torch.ones(1, *source_shape, dtype=torch.float64)
    return int(F.conv2d(ones, nonzero, None, stride, padding, 1, groups).sum())


def resource_report(net: LoihiNetwork) -> ResourceReport:
    """Static resources of ``net``'s integer layers, and the spikes / synaptic operations
    counted in ``net.stats`` by the forwards run since its last ``reset_stats()``."""
    shapes = {-1: net.plan.input_shape, **{i: layer.shape for i, layer in enumerate(net.layers)}}
    rows = []
    for layer in net.layers:
        synapses = connections = mem = shared = 0
        for syn in layer.synapses:
            w = syn.weights_lava()
            conn = _connections(w, syn.kind, shapes[syn.source], syn.stride, syn.padding,
                                syn.groups)
            synapses += int((w != 0).sum())
            connections += conn
            bits = syn.num_weight_bits
            mem += w.numel() * bits if syn.kind == "dense" else conn * bits
            shared += w.numel() * bits
        state = layer.neurons * STATE_BITS_PER_NEURON
        cores = max(math.ceil(layer.neurons / CORE_NEURONS),
                    math.ceil(connections / CORE_SYNAPSES),
                    math.ceil((mem + state) / CORE_MEMORY_BITS))
        stats = net.stats.layers.get(layer.name, LayerStats())
        rows.append(LayerResources(layer.name, layer.neurons, synapses, connections, mem, shared,
                                   state, cores, stats.spikes, stats.synops, stats.neuron_steps))
    return ResourceReport(rows, net.stats.samples, net.timesteps,
                          net.timesteps + net.layers[-1].depth)
