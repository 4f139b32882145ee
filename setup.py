from setuptools import setup

setup(
    name="neuro-emu",
    version="0.1.0",
    description="Spiking-neural-network hardware emulation: fused Triton and Numba neuron kernels, "
    "exact across backends.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "neuro_emu",
        "neuro_emu.ops",
        "neuro_emu.layers",
        "neuro_emu.loihi",
        "neuro_emu.benchmarks",
        "neuro_emu.convert",
        "neuro_emu.data",
        "neuro_emu.models",
        "neuro_emu.nir",
        "neuro_emu.train",
        "neuro_emu.kernels",
        "neuro_emu.reference",
    ],
    # The generic folder names are importable only under the package name.
    package_dir={"neuro_emu.kernels": "kernels", "neuro_emu.reference": "reference"},
    package_data={"neuro_emu.data": ["cifar10_subset.zip"]},  # the test/demo subset, 4 MB
    install_requires=[
        "torch==2.13.0",
        "triton",
        "numpy",
        "numba",
        "nir",
        "tqdm",
        "pillow",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "hypothesis"],
        "peers": ["spikingjelly", "snntorch", "norse"],
    },
    entry_points={"console_scripts": ["neuro-emu = neuro_emu.cli:main"]},
)
