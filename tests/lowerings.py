"""Test helpers that trace an op with another lowering than :func:`jaxpool._lowering.choose` picks."""

from jaxpool import _lowering


def doubling(op):
    """``op`` traced with :data:`jaxpool._lowering.CHAINED_TAPS` at 8: max windows of 9 to 32 taps
    per axis then take the doubling scheme (``"separable"``; without indices custom-partitioned by
    ``jaxpool.max._pool``), which real programs reach only with axes longer than
    :func:`jaxpool._lowering.run_blocks` splits (or dilated ones longer than CHAINED_TAPS)."""

    def traced(x):
        saved, _lowering.CHAINED_TAPS = _lowering.CHAINED_TAPS, 8
        try:
            return op(x)
        finally:
            _lowering.CHAINED_TAPS = saved

    return lambda x: traced(x)  # a lambda, as the ops it stands beside: jit names its module after it
