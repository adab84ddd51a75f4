"""Cost follows the data: program size must not grow with the window, and the lowerings chosen for
large and uneven windows (jaxpool._lowering) keep PyTorch's values, indices and gradients.

Program size is the line count of the lowered StableHLO of jit(grad): what JAX traces and XLA
compiles. The unrolled tap design grew it linearly with the window (and compile time with it, to
minutes for global and adaptive windows); the bounds below allow the logarithmic growth of the
doubling scheme, folds of a bounded number of taps, and nothing more.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool
from jaxpool import _sliding
from tests import reference as ref
from tests.layouts import random_input
from tests.test_transformations import OPS


def _program_lines(fn, x) -> int:
    return jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(fn(v))))).lower(x).as_text().count("\n")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", ["1", "k-1", "k"])
def test_program_size_does_not_grow_with_the_window(kind, stride):
    pool = {"max": jaxpool.max_pool, "avg": jaxpool.avg_pool}[kind]
    x = jnp.ones((1, 128, 128, 2))
    sizes = {}
    for k in (9, 17, 33, 63):
        s = {"1": 1, "k-1": k - 1, "k": k}[stride]
        sizes[k] = _program_lines(lambda v: pool(v, (k, k), s), x)
    # doubling: log2(k) passes per axis; max/min folds of up to CHAINED_TAPS taps per axis, then
    # runs and blocks of runs (a + m ~ 2 sqrt(k) taps): 9 -> 63 never 7x the program, 33 -> 63 little
    assert sizes[63] <= 2 * sizes[9] + 100, sizes
    assert sizes[63] <= 1.25 * sizes[33] + 100, sizes


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_adaptive_program_size_does_not_grow_with_the_bins(kind):
    pool = {"max": jaxpool.adaptive_max_pool, "avg": jaxpool.adaptive_avg_pool}[kind]
    # the same remainder (5 of 7 bins one longer), bins of 20 to 14285 elements
    sizes = {n: _program_lines(lambda v: pool(v, (7,)), jnp.ones((1, n, 2))) for n in (145, 1405, 100_000)}
    # logarithmic: a pairwise tree level (a few dozen lines) per doubling of the bin length
    for n in (1405, 100_000):
        assert sizes[n] - sizes[145] <= 40 * np.log2(n / 145), sizes


def test_global_pooling_program_size_is_constant():
    sizes = {n: _program_lines(jaxpool.global_max_pool, jnp.ones((1, n, n, 2))) for n in (8, 16, 64, 512)}
    # Maps of at least COMPUTED_EXTREMUM_TAPS elements compute their maximum once (a barrier), the
    # 8x8 map's program has none; neither grows with the map. Constants may print differently.
    large = [sizes[n] for n in (16, 64, 512)]
    assert 16 * 16 >= _sliding.COMPUTED_EXTREMUM_TAPS > 8 * 8
    assert max(large) - min(large) <= 4 and sizes[8] <= max(large), sizes


@pytest.mark.parametrize(
    "name, pool, packed",
    [
        ("global_avg_pool", lambda v: jaxpool.global_avg_pool(v, num_spatial_dims=1), "1x25000x16"),
        ("global_avg_pool[mask]", lambda v: jaxpool.global_avg_pool(v, num_spatial_dims=1, mask=v[..., 0] > 0), "1x25000x16"),
        ("adaptive_avg_pool", lambda v: jaxpool.adaptive_avg_pool(v, (1,)), "1x1x25000x16"),
        ("avg_pool", lambda v: jaxpool.avg_pool(v, (50_000,), 50_000), "1x2x12500x16"),
    ],
)
def test_sums_over_few_channels_read_whole_vectors(name, pool, packed):
    """Four float32 channels fill a quarter of a vector: sums over positions merge 4 of them into
    16 lanes (jaxpool._sliding.packed_sum; forward+backward of the global mean 0.48x). The
    program sums a view of the (1, 100000, 4) input with 16 lanes, in either direction."""
    text = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(pool(v))))).lower(jnp.ones((1, 100_000, 4))).as_text()
    assert f"tensor<{packed}xf32>" in text, name


# Uneven adaptive bins (q, r = divmod(size, out)): the regular-core-plus-fringe lowering for
# 1 <= r <= q, r <= 16, and the doubling lowering otherwise; 1-D, 2-D and 3-D.
UNEVEN = [
    ((100,), (7,)),  # q=14, r=2
    ((1000,), (13,)),  # q=76, r=12
    ((61,), (4,)),  # q=15, r=1: windows of q+1 every q
    ((300,), (17,)),  # q=17, r=11
    ((40,), (3,)),  # q=13, r=1
    ((20,), (9,)),  # q=2, r=2
    ((20,), (13,)),  # q=1, r=7: doubling
    ((37, 23), (5, 4)),  # q=7, r=2 and q=5, r=3
    ((11, 13, 9), (3, 5, 2)),  # 3-D
]


@pytest.mark.parametrize("spatial, out", UNEVEN)
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
def test_uneven_adaptive_max_matches_reference(spatial, out, kind):
    rng = np.random.default_rng(len(spatial) * 100 + sum(spatial))
    x = random_input(rng, (2, 3) + spatial, kind)  # channels_first
    want, want_idx = ref.adaptive_max_pool(x, out)
    call = lambda v: jaxpool.adaptive_max_pool(v, out, return_indices=True, data_format="channels_first")  # noqa: E731
    (y, idx), vjp = jax.vjp(call, jnp.asarray(x))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    ct = rng.normal(size=want.shape).astype(np.float32)
    (dx,) = vjp((jnp.asarray(ct), np.zeros(idx.shape, jax.dtypes.float0)))
    np.testing.assert_allclose(dx, ref.adaptive_max_pool_grad(x, ct, out), rtol=1e-6, atol=1e-6)
    # without indices (no positions carried) the same values and gradient
    y2, vjp2 = jax.vjp(lambda v: jaxpool.adaptive_max_pool(v, out, data_format="channels_first"), jnp.asarray(x))
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_allclose(vjp2(jnp.asarray(ct))[0], dx, rtol=0, atol=0)


@pytest.mark.parametrize("spatial, out", UNEVEN)
def test_uneven_adaptive_avg_matches_reference(spatial, out):
    rng = np.random.default_rng(sum(spatial))
    x = random_input(rng, (2, 3) + spatial, "normal")
    y, vjp = jax.vjp(lambda v: jaxpool.adaptive_avg_pool(v, out, data_format="channels_first"), jnp.asarray(x))
    np.testing.assert_allclose(y, ref.adaptive_avg_pool(x, out), rtol=1e-5, atol=1e-6)
    ct = rng.normal(size=y.shape).astype(np.float32)
    np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], ref.adaptive_avg_pool_grad(x, ct, out), rtol=1e-5, atol=1e-6)


def test_long_axis_float32_sums_stay_accurate():
    """Bins of ~14k elements, a 4097-long sliding window and strided 4097-long windows, float32
    against float64."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 100_000, 3)) + 3.0).astype(np.float32)  # a mean offset: naive sums drift
    got = np.asarray(jaxpool.adaptive_avg_pool(x, (7,)), np.float64)
    bins = ref.adaptive_bins(100_000, 7)
    want = np.stack([x[:, a:b].astype(np.float64).mean(axis=1) for a, b in bins], axis=1)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    got = np.asarray(jaxpool.avg_pool(x[:, :20_000], (4097,), 1), np.float64)
    csum = np.concatenate([np.zeros((2, 1, 3)), np.cumsum(x[:, :20_000].astype(np.float64), axis=1)], axis=1)
    want = (csum[:, 4097:] - csum[:, :-4097]) / 4097
    np.testing.assert_allclose(got, want, rtol=2e-6)
    # strided windows of whole blocks (each block one reduction) and a head: 4097 every 4000
    got = np.asarray(jaxpool.avg_pool(x, (4097,), 4000), np.float64)
    want = np.stack([x[:, o * 4000 : o * 4000 + 4097].astype(np.float64).mean(axis=1) for o in range(got.shape[1])], axis=1)
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_uneven_adaptive_long_sequence_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 100_000)).astype(np.float32)
    x[0, 1, 31_000] = np.nan
    t = torch.from_numpy(x).requires_grad_()
    ty, ti = torch.nn.functional.adaptive_max_pool1d(t, 7, return_indices=True)
    g = rng.normal(size=ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    (y, idx), vjp = jax.vjp(lambda v: jaxpool.adaptive_max_pool(v, (7,), return_indices=True, data_format="channels_first"), x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_array_equal(vjp((jnp.asarray(g), np.zeros(idx.shape, jax.dtypes.float0)))[0], t.grad.numpy())


def _largest_buffer(fn, *args) -> int:
    """Elements of the largest array any instruction of ``fn``'s compiled program produces."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    shapes = re.findall(r"= [a-z]+\d*\[([\d,]+)\]", text)
    return max(int(np.prod([int(d) for d in dims.split(",")])) for dims in shapes)


@pytest.mark.parametrize("op", ["max", "avg"])
def test_adaptive_program_size_does_not_grow_with_the_number_of_bins(op):
    """Uneven bins of one or two elements (q = 1): their derivative (jaxpool.adaptive._spread) is
    two picks whatever the number of bins, as are the forward's pick of each bin's start."""
    pool = getattr(jaxpool, f"adaptive_{op}_pool")
    sizes = {o: _program_lines(lambda v: pool(v, (o,)), jnp.ones((1, o * 8 // 5, 2))) for o in (20, 40, 80, 160)}
    assert sizes[160] <= sizes[20] + 40, sizes


def _large_arrays(text: str, size: int) -> list[str]:
    """The instructions of a compiled program's entry computation whose result has at least ``size`` elements."""
    found = []
    for line in text[text.index("ENTRY") :].splitlines():
        match = re.match(r"\s*(?:ROOT )?%(\S+) = [a-z]+\d*\[([\d,]+)\]", line)
        if match and int(np.prod([int(d) for d in match.group(2).split(",")])) >= size:
            found.append(match.group(1))
    return found


@pytest.mark.parametrize("op", ["max", "avg"])
def test_uneven_adaptive_core_copies_no_slice_of_the_input(op):
    """Long uneven bins (62 -> 4: every bin's core is the last 14 elements of a block of 15, plus
    fringe taps) fold strided slices of the input (jaxpool._lowering.CORE_TAPS), and max's winners
    fold a score tap by tap (jaxpool.adaptive._fringe_maxima): in the compiled forward+backward no
    array but the input and its gradient is a quarter of the input's size. Before, the cores were a
    slice of the input that XLA:CPU copied before reducing it (4.4 ms of 8.8 per call on (16, 62,
    62, 64)) and the score an input-sized int32 array; earlier still, a padded copy doubled at
    stride 1 (adaptive avg 62 -> 4 forward 21 ms)."""
    pool = getattr(jaxpool, f"adaptive_{op}_pool")
    x = jnp.ones((2, 62, 62, 4))

    def step(v, ct):
        y, vjp = jax.vjp(lambda u: pool(u, (4, 4)), v)
        return y, vjp(ct)[0]

    text = jax.jit(step).lower(x, jnp.ones((2, 4, 4, 4))).compile().as_text()
    large = _large_arrays(text, x.size // 4)
    assert len(large) == 2, large  # the parameter and the gradient


@pytest.mark.parametrize("size, out", [(40, 6), (50, 7), (56, 5), (90, 13), (44, 9)])
def test_adaptive_sums_copy_no_input(size, out):
    """Adaptive averages whose bins are masked strided windows (40 -> 6, 90 -> 13, 44 -> 9:
    jaxpool.adaptive._binned), a pool on a length that is not a multiple of its stride (50 -> 7:
    8x8/7, jaxpool.avg._axis_sum) or whole blocks of an axis that does not end on a block (56 -> 5:
    12x12/11, jaxpool._sliding.block_sums): in the compiled forward+backward no array but the input
    and its gradient is half the input's size. Before, XLA:CPU wrote a padded copy of the input
    for the phase view (40 -> 42, 50 -> 56), a sliced copy for the blocks' reshape, or input-sized
    windows of each bin length (90 -> 13, 44 -> 9)."""
    x = jnp.ones((2, size, size, 4))

    def step(v, ct):
        y, vjp = jax.vjp(lambda u: jaxpool.adaptive_avg_pool(u, (out, out)), v)
        return y, vjp(ct)[0]

    text = jax.jit(step).lower(x, jnp.ones((2, out, out, 4))).compile().as_text()
    large = _large_arrays(text, x.size // 2)
    assert len(large) == 2, large  # the parameter and the gradient


@pytest.mark.parametrize("size, out", [(64, 40), (50, 30), (13, 5)])
def test_short_adaptive_sum_bins_keep_no_input_sized_window(size, out):
    """Short uneven bins of a 2-D adaptive average (2-4 elements) pick each element of every bin
    (jaxpool.adaptive._picks_sums): in the compiled forward+backward no array but the input and its
    gradient is as large as the input. Before, every stride-1 window of each bin length was an
    input-sized array XLA:CPU wrote per call (two of them for 64 -> 40 and 50 -> 30; 50 -> 30 on
    (32, 50, 50, 64): 39 MiB of temporaries, above glibc's mmap ceiling, 12,000 page faults per call)."""
    x = jnp.ones((2, size, size, 4))

    def step(v, ct):
        y, vjp = jax.vjp(lambda u: jaxpool.adaptive_avg_pool(u, (out, out)), v)
        return y, vjp(ct)[0]

    text = jax.jit(step).lower(x, jnp.ones((2, out, out, 4))).compile().as_text()
    large = _large_arrays(text, x.size)
    assert len(large) == 2, large  # the parameter and the gradient


@pytest.mark.parametrize(
    "pool, window, stride, padding",
    [
        (jaxpool.max_pool, (5, 5), 3, 1),
        (jaxpool.max_pool, (3, 3), 3, 1),
        (jaxpool.avg_pool, (5, 5), 3, 1),
        (jaxpool.avg_pool, (5, 7), (3, 4), 2),  # separable: one axis at a time
    ],
)
def test_strided_padding_makes_no_padded_copy(pool, window, stride, padding):
    """Padded pooling at stride >= 3 reads the padding from per-tap pads of output-sized slices
    (jaxpool._lowering.slices_unpadded): no array in the forward program is larger than the input.
    A padded copy of the input is a fresh input-sized buffer per call that XLA:CPU writes before
    pooling it (max 5x5/3 pad 1 forward on (32, 56, 56, 64): 19 ms with it, 3 ms without)."""
    x = jnp.ones((2, 56, 56, 4))
    assert _largest_buffer(lambda v: pool(v, window, stride, padding), x) <= x.size


@pytest.mark.parametrize("pool", [jaxpool.max_pool, jaxpool.avg_pool])
@pytest.mark.parametrize("size, padding", [(55, 0), (57, 1)])
def test_ragged_gradient_needs_no_input_sized_temporary(pool, size, padding):
    """3x3/2 on sizes that are not a multiple of the stride (AlexNet's 55 -> 27): the forward pools
    an even body and a thin edge (jaxpool._edges), but the gradient is one phase-interleaved loop
    over the whole input that writes ``dx`` itself. Assembled from the parts' gradients it was an
    input-sized temporary padded and added into ``dx`` (or a fused pad of the interleave that
    XLA:CPU runs 5-8x slower): max 3x3/2 on (32, 55, 55, 64) forward+backward 14.6 -> 7.8 ms."""
    x = jnp.ones((4, size, size, 8))

    def step(v, ct):
        y, vjp = jax.vjp(lambda u: pool(u, (3, 3), 2, padding), v)
        return y, vjp(ct)[0]

    ct = jnp.ones(jax.eval_shape(lambda v: pool(v, (3, 3), 2, padding), x).shape)
    memory = jax.jit(step).lower(x, ct).compile().memory_analysis()
    assert memory.temp_size_in_bytes < x.nbytes // 2, (memory.temp_size_in_bytes, x.nbytes)


def test_3d_max_reads_its_input_once():
    """max 3x3x3/2 pad 1 folds its two inner axes at once (jaxpool._lowering.joint_inner_pass): the
    compiled inference's only temporary is that pass's output, a quarter of the input. One pass per
    axis made XLA:CPU write the W pass's shifted odd phase, half the input (0.78 of it in all;
    forward 4.3x slower on a 67 MB volume). Forward+backward holds that output's offsets and the
    backward pass's frames (its cotangent and offsets padded once, jaxpool._taps.spread): 0.67 of
    the input."""
    x = jnp.ones((2, 16, 32, 32, 8))
    pool = lambda v: jaxpool.max_pool(v, (3, 3, 3), 2, 1)  # noqa: E731
    inference = jax.jit(pool).lower(x).compile().memory_analysis().temp_size_in_bytes
    ct = jnp.ones(jax.eval_shape(pool, x).shape)
    training = jax.jit(lambda v, c: jax.vjp(pool, v)[1](c)).lower(x, ct).compile().memory_analysis().temp_size_in_bytes
    assert inference <= 0.3 * x.nbytes and training <= 0.7 * x.nbytes, (inference, training, x.nbytes)


@pytest.mark.parametrize("window, padding, bound", [((5, 5), 2, 0.6), ((4, 4), 1, 0.4), ((3, 3, 3), 1, 0.4)])
def test_strided_sum_transpose_pads_the_cotangent_once(window, padding, bound):
    """Strided window sums (stride 2, even sizes) are transposed by jaxpool._taps.spread (the
    framed sum): one padded cotangent, a third of the input here, is the only
    temporary of the compiled forward+backward. JAX's own transpose of the tap sum pads the
    cotangent once per row shift (5x5/2 pad 2: twice the input in temporaries, 4x4/2 pad 1 half of
    it); as axis passes the 5x5 sum once padded a copy of the input (avg 5x5/2 pad 2 on (32, 56, 56,
    64): 50 MiB of temporaries, past glibc's mmap ceiling, forward+backward 3x slower). 5x5/2 is
    now differentiated as its two passes (jaxpool._lowering.differentiates_by_passes): the first
    pass's output, half the input, and its cotangent, reusing that buffer, and no padded copy."""
    x = jnp.ones((2,) + (56,) * (len(window) - 1) + (16, 4))
    pool = lambda v: jaxpool.avg_pool(v, window, 2, padding)  # noqa: E731

    def step(v, ct):
        y, vjp = jax.vjp(pool, v)
        return y, vjp(ct)[0]

    memory = jax.jit(step).lower(x, jnp.ones(jax.eval_shape(pool, x).shape)).compile().memory_analysis()
    assert memory.temp_size_in_bytes < bound * x.nbytes, (memory.temp_size_in_bytes, x.nbytes)


@pytest.mark.parametrize("size, out", [(100, 7), (40, 6)])
def test_masked_bin_gradient_routes_blocks_not_taps(size, out):
    """Uneven adaptive max bins a 16-tap window covers are one masked strided pass per axis (100 -> 7:
    16 taps every 14). The derivative routes whole blocks of the stride and the head taps
    (jaxpool._lowering.routes_blocks): the transpose of a block is a broadcast, a select and a
    reshape; of a tap, an interior pad — one pass over the gradient per tap (100 -> 7 on (8, 100,
    100, 64) forward+backward 0.56-0.74x with blocks). At most one interior pad per head tap."""
    x = jnp.ones((2, size, size, 4))
    q, r = divmod(size, out)
    step = jax.jit(lambda v, ct: jax.vjp(lambda u: jaxpool.adaptive_max_pool(u, (out, out)), v)[1](ct))
    text = step.lower(x, jnp.ones((2, out, out, 4))).as_text()
    interior = [p for p in re.findall(r"stablehlo.pad .*interior = \[([\d, ]+)\]", text) if p.strip("0, ")]
    assert len(interior) <= 2 * r, len(interior)


def _float_barriers_returning(jaxpr, shape) -> int:
    """How many barriers (jaxpool._fusion's ``jaxpool_barrier``, at any depth) return a float32 array of ``shape``."""
    count = 0
    for eqn in jaxpr.eqns:
        returned = any(v.aval.shape == shape and v.aval.dtype == jnp.float32 for v in eqn.outvars)
        if eqn.primitive.name == "jaxpool_barrier" and returned:
            count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _float_barriers_returning(inner, shape)
    return count


@pytest.mark.parametrize("window, stride, padding, between", [(4, 2, 1, (2, 16, 8, 4)), (5, 1, 2, (2, 16, 16, 4))])
def test_chained_passes_compute_the_intermediate_once(window, stride, padding, between):
    """Chained max passes (one per axis) whose derivatives would re-read more than 9 taps per
    element fused get a barrier between them (jaxpool._lowering.keeps_apart): the first pass's
    output, and its cotangent, are computed once — each behind a barrier. Without
    it, 4x4/2 pad 1 on (32, 56, 56, 64) ran 3-6x slower (61 ms against 10-22; an eleventh-session
    change to route_taps dropped it silently), 5x5/1 pad 2 2x."""
    x = jnp.ones((2, 16, 16, 4))

    def step(v, ct):
        y, vjp = jax.vjp(lambda u: jaxpool.max_pool(u, (window, window), stride, padding), v)
        return y, vjp(ct)[0]

    ct = jnp.ones(jax.eval_shape(lambda v: jaxpool.max_pool(v, (window, window), stride, padding), x).shape)
    assert _float_barriers_returning(jax.make_jaxpr(step)(x, ct).jaxpr, between) >= 2


def _copies_outside_loop_bodies(text: str) -> list[str]:
    """The non-scalar ``copy`` instructions of compiled HLO ``text`` outside while-loop bodies
    (jaxpool._fusion's barrier loops never run their bodies)."""
    bodies = set(re.findall(r"body=(%[\w.\-]+)", text))
    copies = []
    for name, computation in re.findall(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)^\}", text, re.M | re.S):
        if name not in bodies:
            copies += re.findall(r"= (\w+\[[^\]]+\])\S* copy\(", computation)
    return copies


@pytest.mark.parametrize(
    "pool",
    [
        lambda v: jaxpool.max_pool(v, (4, 4), 2, 1),  # chained passes: barriers on the activation and its cotangent
        lambda v: jaxpool.max_pool(v, (3, 3), 2, 1),  # the offsets' barrier
        lambda v: jaxpool.adaptive_max_pool(v, (6, 6)),  # masked bins, chained
    ],
    ids=["max 4x4/2 pad 1", "max 3x3/2 pad 1", "adaptive max 40->6"],
)
@pytest.mark.parametrize("cotangent", ["computed", "given"])
def test_fusion_barriers_copy_nothing(pool, cotangent):
    """jaxpool._fusion's barrier is a while loop that never runs, whose state takes over the held
    array's buffer: the compiled forward+backward has no conditional and copies no array. The
    conditional it replaced copied the array in its identity branch (adaptive max 40 -> 6 on (32,
    40, 40, 64): 12% of the forward+backward thread time). A loop cannot take over a program
    argument's buffer: the barrier skips the program's arguments (a cotangent passed in, as in the
    breadth benchmark, which the barrier of jaxpool._fusion.results_once copied once per call) —
    and keeps a computed cotangent, as in training."""
    x = jnp.ones((2, 40, 40, 8))
    prepare = (lambda ct: 2 * ct) if cotangent == "computed" else (lambda ct: ct)
    step = jax.jit(lambda v, ct: jax.vjp(pool, v)[1](prepare(ct))[0] + 0 * jnp.sum(pool(v)))
    text = step.lower(x, jnp.ones(jax.eval_shape(pool, x).shape)).compile().as_text()
    assert "conditional(" not in text
    assert _copies_outside_loop_bodies(text) == []
    assert " while(" in text  # the barriers are there


def test_barriers_skip_only_the_programs_own_arguments():
    """The barrier on a cotangent that is an argument of the jitted program is dropped (nothing to
    fuse); inside a nested ``jit`` the same argument may be computed by the caller, so the barrier
    stays there — and the derivative of ``sin`` computed by such a caller is computed once, in a
    fusion shaped like the result, not per window tap."""
    pool = functools.partial(jaxpool.avg_pool, window_shape=(3, 3), strides=2)
    x = jnp.linspace(0.1, 2.0, 2 * 9 * 9 * 4, dtype=jnp.float32).reshape(2, 9, 9, 4)
    ct = jnp.ones((2, 4, 4, 4))

    def step(v, ct):
        return jax.vjp(pool, v)[1](ct)[0]

    def loops(fn, *args):
        return jax.jit(fn).lower(*args).as_text().count("stablehlo.while")

    assert loops(step, x, ct) + 1 == loops(lambda v, ct: jax.jit(step)(v, ct), x, ct)
    nested = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(jax.jit(pool)(v))))).lower(x).compile().as_text()
    assert _cosine_fusion_shapes(nested) == ["f32[2,4,4,4]"]


def _cosine_fusion_shapes(text: str) -> list[str]:
    """The result shapes of the compiled fusions (of HLO ``text``) that compute a cosine."""
    computations = dict(re.findall(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)^\}", text, re.M | re.S))
    with_cosine = {name for name, body in computations.items() if " cosine(" in body}
    return [
        shape
        for body in computations.values()
        for shape, callee in re.findall(r"= (\S+?)(?:\{[^}]*\})? fusion\([^\n]*calls=(%[\w.\-]+)", body)
        if callee in with_cosine
    ]


@pytest.mark.parametrize("name", sorted(OPS))
def test_a_callers_use_of_the_result_is_computed_once(name):
    """The derivative of ``sum(sin(op(x)))`` computes ``cos(op(x))`` once, in one fusion shaped like
    the result (jaxpool._fusion.results_once), rather than fused into the pooling's backward
    loops, which recomputed the forward window at every tap (max 3x3/2 pad 1 on (32, 56, 56, 64):
    forward+backward 67 ms against 5.9 ms with a given cotangent)."""
    op = OPS[name]
    x = jnp.linspace(0.1, 2.0, 2 * 8 * 8 * 4, dtype=jnp.float32).reshape(2, 8, 8, 4)
    text = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(op(v))))).lower(x).compile().as_text()
    result = jax.eval_shape(op, x)
    assert _cosine_fusion_shapes(text) == [f"f32[{','.join(map(str, result.shape))}]"]


def _fwd_bwd_program(pool, x):
    step = jax.jit(lambda v, ct: jax.vjp(pool, v)[1](ct))
    return step.lower(x, jnp.ones(jax.eval_shape(pool, x).shape))


_DISJOINT = {
    "max 3x3/3 pad 1 (chained)": ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (3, 3), 3, 1)),
    "max 3x3/3 on 56 (ragged)": ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (3, 3), 3)),
    "max 2x2/3 pad 1 (joint taps)": ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (2, 2), 3, 1, return_indices=True)[0]),
    "max 2x2/3 pad 1 (gaps)": ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (2, 2), 3, 1)),
    "max 3x3x3/3 pad 1": ((2, 16, 32, 32, 4), lambda v: jaxpool.max_pool(v, (3, 3, 3), 3, 1)),
    "max 1-D 4/4 pad 1": ((2, 4096, 8), lambda v: jaxpool.max_pool(v, (4,), 4, 1)),
    "adaptive max 28 -> 11 (bins of 3 and 4 every 5)": ((2, 28, 28, 8), lambda v: jaxpool.adaptive_max_pool(v, (11, 11))),
}


@pytest.mark.parametrize("name", _DISJOINT)
def test_disjoint_window_gradient_is_one_loop(name):
    """Windows that never overlap (no longer than their stride) route the max index's derivative as
    one select per window over the input cut into windows (jaxpool.max._disjoint_route): the
    transpose is a pad, a reshape and a broadcast select, no interior pad. The tap route's
    transpose padded the cotangent once per tap, each a fresh input-sized temporary: max 3x3/3
    pad 1 on (32, 56, 56, 64) kept 27.7 MiB of temporaries (now 5.6) and ran 2x slower."""
    shape, pool = _DISJOINT[name]
    x = jnp.ones(shape)
    lowered = _fwd_bwd_program(pool, x)
    interior = [p for p in re.findall(r"stablehlo.pad .*interior = \[([\d, ]+)\]", lowered.as_text()) if p.strip("0, ")]
    assert not interior, interior
    assert lowered.compile().memory_analysis().temp_size_in_bytes < 0.6 * x.nbytes


@pytest.mark.parametrize(
    "shape, pool",
    [
        ((2, 55, 55, 8), lambda v: jaxpool.max_pool(v, (3, 3), 2)),  # a ragged phase view
        ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (5, 5), 3, 1)),  # two chained passes
        ((2, 13, 13, 8), lambda v: jaxpool.adaptive_max_pool(v, (6, 6))),  # bins of 3 every 2
    ],
)
def test_max_route_transpose_pads_its_cotangent_once(shape, pool):
    """A max index route's backward pass (jaxpool._taps.spread with the offsets) pads the cotangent
    and the offsets once per routed pass into a frame and slices its taps from them. JAX's own
    transpose of the tap selects pads each tap into the phase view (9 pads for 3x3/2 on 55, 10 for
    5x5/3's passes), and XLA:CPU fuses them into one loop that tests every pad's bounds for every
    element: forward+backward 3x3/2 on (32, 55, 55, 64) 17-28 -> 4.4-6.6 ms, 5x5/3 pad 1 on (32,
    56, 56, 64) 31-42 -> 8-17 ms on an AVX2 machine (a Zen 3 EPYC)."""
    x = jnp.ones(shape)
    ct = jnp.ones(jax.eval_shape(pool, x).shape)
    compiled = jax.jit(lambda v, c: jax.vjp(pool, v)[1](c)).lower(x, ct).compile().as_text()
    pads = [line for line in compiled.splitlines() if re.search(r"= \S+ pad\(", line) and "transpose(" in line]
    passes = 2 if shape[1] == 56 else 1
    assert len(pads) == 2 * passes, pads


@pytest.mark.parametrize(
    "spatial, window, stride, padding, written",
    [
        ((16, 16), (3, 3), 2, 1, True),  # phase views, shifted taps padded
        ((17, 17), (3, 3), 2, 1, True),  # "edges" over phase views
        ((8, 16, 16), (3, 3, 3), 2, 1, True),
        ((15, 15), (3, 3), 2, 0, False),  # in-bounds slices
        ((16, 16), (3, 3), 1, 1, False),  # chained passes: measured slower written
        ((16, 16), (5, 5), 3, 1, False),  # padded slices of the unpadded input: likewise
    ],
)
def test_padded_half_precision_phase_folds_upcast_in_a_loop_of_their_own(spatial, window, stride, padding, written, monkeypatch):
    """Where the host lacks 16-bit masked loads (x86 without AVX-512BW), a padded max over phase
    views of a bfloat16 input writes its float32 upcast (an input-sized float32 array computed from
    the input alone, behind a barrier) and folds that: converted inside the fold, XLA:CPU loaded
    each padded tap's 16 bits conditionally and ran the whole loop scalar (3x3/2 pad 1 on (32, 56,
    56, 64) forward+backward 37 -> 14 ms, PyTorch 7-10). Other geometries compile the same program
    either way (XLA itself writes the upcast that the parts of ``"edges"`` share)."""
    x = jnp.ones((2, *spatial, 8), jnp.bfloat16)
    pool = lambda v: jaxpool.max_pool(v, window, stride, padding)  # noqa: E731
    ct = jnp.ones(jax.eval_shape(pool, x).shape, x.dtype)
    dims = ",".join(map(str, x.shape))

    def upcasts(apart: bool) -> list[str]:
        monkeypatch.setattr(jaxpool._lowering, "UPCASTS_16BIT_APART", apart)
        text = jax.jit(lambda v, c: jax.vjp(pool, v)[1](c)).lower(x, ct).compile().as_text()
        entry = text[text.index("ENTRY") :]
        (param,) = re.findall(r"%(\S+) = bf16\[[\d,]+\]\{[\d,]+\} parameter\(0\)", entry)
        return re.findall(rf"= f32\[{dims}\]\{{[\d,]+\}} fusion\(%{re.escape(param)}\)", entry)

    fused, apart = upcasts(False), upcasts(True)
    assert len(apart) == (1 if written else len(fused)), (fused, apart)
    if written and spatial[-1] % 2 == 0:  # the fold over phase views converts each tap
        assert not fused, fused


def _pad_rooted_fusions(compiled: str) -> list[str]:
    """Fusions of the entry computation whose fused computation is a pad (of a slice) of the forward
    pass: a padded tap written to memory instead of read inside the loop that uses it. (The backward
    pass's frames — the cotangent and the offsets of a max index route padded once, each read by
    every tap, jaxpool._taps.spread — are meant to be written.)"""
    roots = set()
    for block in compiled.split("\n\n"):
        header = re.match(r"%(\S+) ", block.strip())
        root = re.search(r"^\s*ROOT %\S+ = \S+ (\w+)\(.*", block, re.M)
        if header and root and root.group(1) == "pad" and "transpose(" not in root.group(0):
            roots.add(header.group(1))
    entry = compiled[compiled.index("\nENTRY") :]
    return [c for c in re.findall(r"fusion\([^)]*\), kind=kLoop, calls=%([\w.\-]+)", entry) if c in roots]


@pytest.mark.parametrize(
    "shape, pool",
    [
        ((2, 56, 56, 8), lambda v: jaxpool.max_pool(v, (5, 5), 3, 1)),
        ((2, 90, 90, 8), lambda v: jaxpool.adaptive_max_pool(v, (13, 13))),  # windows of 8 every 7, pad 1
    ],
)
def test_padded_strided_winner_reads_its_taps_in_place(shape, pool):
    """Overlapping windows at strides of 3 and more read strided slices of the unpadded input,
    padded where they leave it. The winner is a chain of equality tests against the (computed
    once) extremum (jaxpool._taps.first_match) whose taps each feed one test: PyTorch's select fold
    carried its best value through every tap, and XLA:CPU wrote each padded tap to memory first
    (adaptive max 90 -> 13 on (8, 90, 90, 64): two 2.4 MB temporaries per pass, forward+backward
    0.88-0.93x without)."""
    compiled = _fwd_bwd_program(pool, jnp.ones(shape)).compile().as_text()
    assert not _pad_rooted_fusions(compiled)


def test_unpool_without_window_scatters_the_flattened_output_once():
    """max_unpool without its window, on one device: one scatter into the flattened output (offsets
    made global, jaxpool._scatter), not one per (batch, channel) plane, which XLA:CPU ran 2-4x
    slower (max_pool then max_unpool 2x2/2 on (8, 112, 112, 64) forward+backward). Differentiated,
    still one: of the writers' ranks, the values then read at them (gathers, no second scatter)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)
    unpool = lambda v: jaxpool.max_unpool(v, idx, (8, 8))  # noqa: E731
    forward = jax.jit(unpool).lower(y).compile().as_text()
    both = jax.jit(lambda v: (lambda out, vjp: (out, vjp(x)))(*jax.vjp(unpool, v))).lower(y).compile().as_text()
    for text in (forward, both):
        shapes = re.findall(r"= \w+\[([\d,]*)\]\S* scatter\(", text)
        assert len(shapes) == 1 and "," not in shapes[0], shapes
