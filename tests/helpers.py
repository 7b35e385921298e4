"""Small helpers shared by the tests."""

import numpy as np

from minifcn.backend import as_numpy


def on(xp, module, dtype=np.float64):
    """Cast ``module`` to ``dtype`` and move it to the device of ``xp``."""
    module.astype(dtype)
    return module.to("cpu" if xp is np else "gpu")


def distinct_values(xp, shape, rng, scale=0.1):
    """Shuffled, evenly spaced values: no ties (max pool) and none near zero (ReLU)."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2 + 0.5) * scale
    return xp.asarray(rng.permutation(values).reshape(shape))


def close(a, b, **kw):
    np.testing.assert_allclose(as_numpy(a), as_numpy(b), **kw)
