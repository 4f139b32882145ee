# Sourced by the bench/gpu_*.sh scripts on the lent GPU machine.
[ -d .whl/site ] && export PYTHONPATH="$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
# The machine has no package index, so no `pip install -e .`: the layout setup.py's package_dir
# makes (kernels/ and reference/ inside neuro_emu) is made with symbolic links in this copy of the
# tree (ignored by git), and the console script is a two-line wrapper.
ln -sfn ../kernels neuro_emu/kernels
ln -sfn ../reference neuro_emu/reference
mkdir -p /tmp/neuro-emu-bin
printf '#!/bin/sh\nexec python3 -m neuro_emu.cli "$@"\n' >/tmp/neuro-emu-bin/neuro-emu
chmod +x /tmp/neuro-emu-bin/neuro-emu
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/neuro-emu-bin:$PATH"
