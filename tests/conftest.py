import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter; the flag must be set before any
# kernel is defined, hence here, before the tests import anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
