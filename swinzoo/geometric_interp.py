"""The geometric resize of V1 relative position bias tables done by the official SimMIM fine-tune load, in torch.

Official `utils_simmim.remap_pretrained_keys_swin` (BEiT's recipe) spreads the source offsets on a geometric
progression whose outermost offset reaches the target's, then resamples each head's table at the target's integer
offsets with SciPy's `interp2d(kind="cubic")`. SciPy removed `interp2d` in 1.14, so it is rebuilt here from what it
computed on a grid: FITPACK `regrid` with s=0, i.e. the tensor-product cubic spline that interpolates every grid
value, with interior knots at the grid points but the second and the second-last (not-a-knot), evaluated by
`bisplev`, which clamps arguments outside the data to its ends. An interpolant in a tensor-product space
separates, so the values on the target grid are A_y Z A_x^T with A the 1-D "fit, then evaluate" matrix.
"""

from __future__ import annotations

import torch

from swinzoo.errors import SwinzooError

DEGREE = 3
# the official bisection: ratio bounds and stopping width
RATIO_RANGE = (1.01, 1.5)
RATIO_TOLERANCE = 1e-6


def geometric_ratio(src_half: int, dst_half: int) -> float:
    """q with 1 + q + ... + q^(src_half-1) ~ dst_half, bisected in [1.01, 1.5] as the official loop does: its
    answer is the last midpoint tried, so this reproduces that float exactly."""
    lo, hi = RATIO_RANGE
    q = lo
    while hi - lo > RATIO_TOLERANCE:
        q = (lo + hi) / 2.0
        if (1.0 - q**src_half) / (1.0 - q) > dst_half:
            hi = q
        else:
            lo = q
    return q


def geometric_offsets(side: int, q: float) -> torch.Tensor:
    """(side,) float64 source coordinates: 0 and +-(1, 1+q, 1+q+q^2, ...), summed term by term (official order)."""
    reach, total = [], 1.0
    for i in range(side // 2):
        reach.append(total)
        total += q ** (i + 1)
    return torch.tensor([-r for r in reversed(reach)] + [0.0] + reach, dtype=torch.float64)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den is 0: a zero-width B-spline support contributes nothing (Cox-de Boor's 0/0 := 0)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def _bspline_basis(knots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(len(u), len(knots)-4) values of the cubic B-splines at u, which lies in [knots[3], knots[-4]]; a point on
    the right end belongs to the last interval, as FITPACK's interval search places it."""
    n = len(knots)
    span = (torch.searchsorted(knots, u, right=True) - 1).clamp(DEGREE, n - DEGREE - 2)
    basis = torch.nn.functional.one_hot(span, n - 1).to(torch.float64)
    u = u[:, None]
    for d in range(1, DEGREE + 1):  # Cox-de Boor recursion, degree d from degree d-1
        t_j, t_jd, t_j1, t_jd1 = knots[: n - d - 1], knots[d : n - 1], knots[1 : n - d], knots[d + 1 :]
        basis = _ratio(u - t_j, t_jd - t_j) * basis[:, :-1] + _ratio(t_jd1 - u, t_jd1 - t_j1) * basis[:, 1:]
    return basis


def spline_matrix(x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """(len(xq), len(x)) float64 M: M @ f are the values at xq of the not-a-knot cubic spline through (x, f), the
    interpolant FITPACK fits with s=0; xq outside [x[0], x[-1]] is clamped to the ends, as `bisplev` clamps.

    x must increase strictly and hold at least 4 points (FITPACK's `regrid` needs more points than the degree).
    """
    x, xq = x.to(torch.float64), xq.to(torch.float64)
    if len(x) <= DEGREE or bool((x[1:] <= x[:-1]).any()):
        raise SwinzooError(f"cubic spline interpolation needs at least 4 strictly increasing points, got {len(x)}")
    knots = torch.cat([x[:1].repeat(DEGREE + 1), x[2:-2], x[-1:].repeat(DEGREE + 1)])
    collocation = _bspline_basis(knots, x)
    evaluation = _bspline_basis(knots, xq.clamp(float(x[0]), float(x[-1])))
    return torch.linalg.solve(collocation.T, evaluation.T).T


def interp2d_cubic(z: torch.Tensor, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor,
                   yq: torch.Tensor) -> torch.Tensor:
    """SciPy's `interp2d(x, y, z, kind="cubic")(xq, yq)` on a grid, in float64: z is (..., len(y), len(x)) (rows
    follow y, interp2d's convention), the result (..., len(yq), len(xq)); all coordinates increasing."""
    return spline_matrix(y, yq) @ z.to(torch.float64) @ spline_matrix(x, xq).T


def resize_bias_table_geometric(table: torch.Tensor, size: int) -> torch.Tensor:
    """((2w-1)^2, heads) -> (size^2, heads): the official SimMIM geometric resize, computed in float64 and returned
    in the table's dtype. Rows of each head's square are the first offset, as the official `view(src, src)` lays
    them out; the geometry is symmetric, so interp2d's x/y naming changes nothing."""
    side = int(round(table.shape[0] ** 0.5))
    if side * side != table.shape[0] or side < 2 * DEGREE - 1:
        raise SwinzooError(f"cannot resize a {table.shape[0]}-row bias table geometrically: the source window must "
                           "be at least 3 (a table of at least 5x5 offsets)")
    heads = table.shape[1]
    source = geometric_offsets(side, geometric_ratio(side // 2, size // 2))
    target = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)  # official arange(-t, t + 0.1, 1.0)
    grids = table.to(torch.float64).T.reshape(heads, side, side)
    out = interp2d_cubic(grids, source, source, target, target)
    return out.reshape(heads, -1).T.contiguous().to(table.dtype)
