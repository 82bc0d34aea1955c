"""Thin click commands over the alod library: one module per MLflow step."""

import os

# OpenMP threads that spin while waiting collapse CPU training 5-8x as soon as anything else
# wants a core (measured on 2 cores: 17.5 -> 2.3 img/s); passive waiting costs ~20 % when the
# machine is idle and keeps ~10 img/s when it is not. Set before torch loads; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
