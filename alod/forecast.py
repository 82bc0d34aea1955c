"""What the next labels will buy: a learning-curve forecast and a stopping rule.

The model is the saturating (inverse) power law

    mAP50(n) = a - b * n ** -c        (n = labeled images or boxes, n > 0; a: asymptote, b >= 0, c > 0)

the standard three-parameter learning curve: Figueroa et al. (2012, "Predicting
sample size required for classification performance", BMC Med. Inform. Decis.
Mak.) fit exactly this form to predict the labels a target needs, and the
review by Viering & Loog (2022, "The shape of learning curves: a review",
IEEE TPAMI) finds the power law the best-supported shape for extrapolation,
with exponential curves flattening too early. Three parameters is also the most
a handful of active-learning cycles can pin down: a four-parameter form (an
offset in n, or a second asymptote term) is not identifiable from 3-5 points.
For a fixed c the model is linear in (a, b), so the fit is a least-squares
solve per c on a grid of c (variable projection), refined by zooming in on it:
no optimiser, no scipy, no starting guess to get wrong. Constraints: b >= 0
(more labels never hurt on average) and a <= 1 (mAP50 is at most 1).

The uncertainty band comes from a bootstrap: over seeds (groups) when the
points come from several seeds, else over the points (cycles) themselves;
the band is the central `level` quantile range of the resampled forecasts.
One run with exactly three points has no band (every resample that can be fitted
is the same three points): the point forecast is all there is then.

Points with n = 0 (the zero-label model) are left out: n ** -c is infinite there.

The stopping rule (`stop_rule`): stop when the forecast gain over the next
`horizon` labels, expressed per 1 000 labels, is below `min_gain`, and so is
the optimistic end of its band. The rule therefore waits for a band (four or
more cycles, or several seeds): three points fit three parameters exactly, and
a noisy dip between them would otherwise read as a flat curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MIN_POINTS = 3
MULTIPLES = (1.5, 2.0, 5.0)
_C_GRID = np.geomspace(0.02, 4.0, 240)


class NotEnoughPoints(ValueError):
    """Fewer distinct label counts than the curve has parameters."""


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float
    sse: float = 0.0

    def __call__(self, n):
        return self.a - self.b * np.power(np.asarray(n, float), -self.c)

    @property
    def at_bound(self) -> bool:
        """The asymptote sits at its bound of 1: the points showed no flattening for the fit to find, so
        the curve beyond them is an extrapolation of their slope, not a forecast of where mAP50 levels off."""
        return self.a >= 1.0 - 1e-9

    def labels_for(self, target: float) -> float:
        """Labels at which the curve reaches `target` (inf when the asymptote is not above it)."""
        if self.b <= 0:
            return 0.0 if target <= self.a else math.inf
        if target >= self.a:
            return math.inf
        return float((self.b / (self.a - target)) ** (1.0 / self.c))


def _points(n, y) -> tuple[np.ndarray, np.ndarray]:
    n, y = np.asarray(n, float).ravel(), np.asarray(y, float).ravel()
    keep = np.isfinite(n) & np.isfinite(y) & (n > 0)
    return n[keep], y[keep]


def check_points(n, y) -> None:
    """Raise NotEnoughPoints, saying why, unless there are three different label counts to fit."""
    n, _ = _points(n, y)
    distinct = len(np.unique(n))
    if distinct < MIN_POINTS:
        raise NotEnoughPoints(
            f"no forecast from {distinct} label count(s): the learning curve a - b*n^-c has three parameters "
            f"(asymptote a, scale b, rate c), so it needs mAP50 at {MIN_POINTS} or more different numbers of "
            f"labels (cycles) to be determined; zero-label points do not count")


def _solve(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y ~ a - b z for each row of z (G x m), with b >= 0 and a <= 1: (a, b, sse) per row."""
    zm, ym = z.mean(axis=1, keepdims=True), y.mean()
    dz = z - zm
    var = (dz ** 2).sum(axis=1)
    cov = (dz * (y - ym)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(var > 0, -cov / var, 0.0)
    b = np.maximum(b, 0.0)
    a = ym + b * zm[:, 0]
    over = a > 1.0
    if over.any():  # asymptote at 1: 1 - y = b z, b >= 0
        zo = z[over]
        b_o = np.maximum((zo * (1.0 - y)).sum(axis=1) / np.maximum((zo ** 2).sum(axis=1), 1e-300), 0.0)
        a = a.copy()
        a[over], b[over] = 1.0, b_o
    resid = y[None, :] - (a[:, None] - b[:, None] * z)
    return a, b, (resid ** 2).sum(axis=1)


def fit_power_law(n, y) -> PowerLaw:
    """Least-squares fit of y = a - b * n^-c (n > 0). Raises NotEnoughPoints below three label counts."""
    check_points(n, y)
    n, y = _points(n, y)
    z = np.power(n[None, :], -_C_GRID[:, None])
    a, b, sse = _solve(z, y)
    i = int(np.argmin(sse))
    best = (a[i], b[i], sse[i], _C_GRID[i])
    lo, hi = _C_GRID[max(i - 1, 0)], _C_GRID[min(i + 1, len(_C_GRID) - 1)]
    for _ in range(3):  # zoom in on c between the best point's neighbours, vectorised
        cs = np.linspace(lo, hi, 33)
        a2, b2, s2 = _solve(np.power(n[None, :], -cs[:, None]), y)
        j = int(np.argmin(s2))
        if s2[j] <= best[2]:
            best = (a2[j], b2[j], s2[j], cs[j])
        lo, hi = cs[max(j - 1, 0)], cs[min(j + 1, len(cs) - 1)]
    a1, b1, s1, c = best
    return PowerLaw(float(a1), float(b1), float(c), float(s1))


@dataclass
class Forecast:
    """A fitted curve and what it says at larger budgets. Band entries are NaN when no band exists."""
    fit: PowerLaw
    now: float  # current labels (the largest n fitted)
    points: int
    at: dict[float, tuple[float, float, float]]  # multiple of `now` -> (forecast, low, high)
    target: float | None = None
    to_target: tuple[float, float, float] | None = None  # labels to reach target (inf: never, by the fit)
    band: str = ""  # how the band was made, or why there is none
    fits: list[PowerLaw] = field(default_factory=list, repr=False)  # the bootstrap's

    @property
    def has_band(self) -> bool:
        return bool(self.fits)

    def curve(self, xs, level: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fitted curve at `xs` and its band (NaN without one), for plots."""
        xs = np.asarray(xs, float)
        mid = self.fit(xs)
        if not self.fits:
            return mid, np.full_like(mid, np.nan), np.full_like(mid, np.nan)
        ys = np.stack([f(xs) for f in self.fits])
        return mid, np.quantile(ys, 0.5 - level / 2, axis=0), np.quantile(ys, 0.5 + level / 2, axis=0)

    def gain(self, horizon: float, fit: PowerLaw | None = None) -> float:
        """Forecast mAP50 gain over the next `horizon` labels, per 1 000 labels."""
        f = fit or self.fit
        return float((f(self.now + horizon) - f(self.now)) / horizon * 1000.0)

    def gain_high(self, horizon: float, level: float = 0.8) -> float:
        """The optimistic end of the band of `gain` (NaN without a band)."""
        if not self.fits:
            return float("nan")
        return float(np.quantile([self.gain(horizon, f) for f in self.fits], 0.5 + level / 2))

    def metrics(self, prefix: str = "forecast_", to_target_key: str | None = None) -> dict[str, float]:
        """`{prefix}mAP50.x2` (+ `.low`, `.high`) per multiple, `{prefix}asymptote` and the labels to the
        target (`to_target_key`, default `{prefix}labels_to_target`). Finite values only (MLflow stores inf
        as 1.8e308): an unreachable target, or a missing band, logs nothing for it."""
        out = {f"{prefix}asymptote": self.fit.a}
        for m, (mid, low, high) in self.at.items():
            key = f"{prefix}mAP50.x{m:g}"
            out[key], out[f"{key}.low"], out[f"{key}.high"] = mid, low, high
        if self.to_target is not None:
            key = to_target_key or f"{prefix}labels_to_target"
            out[key], out[f"{key}.low"], out[f"{key}.high"] = self.to_target
        return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}

    def describe(self, unit: str = "labeled images") -> str:
        f = self.fit
        bound = ", asymptote at its bound 1: no flattening seen yet, so beyond the points an extrapolation" \
            if f.at_bound else ""
        parts = [f"forecast (mAP50 = {f.a:.4f} - {f.b:.4g} * n^-{f.c:.3f}{bound}, {self.points} points, "
                 f"{self.band}):"]
        for m, (mid, low, high) in self.at.items():
            band = f" [{low:.4f}, {high:.4f}]" if np.isfinite(low) else ""
            parts.append(f"{m:g}x ({self.now * m:.0f} {unit}) {mid:.4f}{band}")
        if self.to_target is not None:
            mid, low, high = self.to_target
            text = "never (asymptote below it)" if not np.isfinite(mid) else f"{mid:.0f}"
            if np.isfinite(low) or np.isfinite(high):
                text += f" [{_n(low)}, {_n(high)}]"
            parts.append(f"to reach {self.target:.4f}: {text} {unit}")
        return "; ".join(parts[:1]) + " " + "; ".join(parts[1:])


def _n(v: float) -> str:
    return f"{v:.0f}" if np.isfinite(v) else "never"


def forecast(n, y, groups=None, *, multiples=MULTIPLES, target: float | None = None, boot: int = 200,
             level: float = 0.8, seed: int = 0) -> Forecast:
    """Fit the curve to (n, y) and forecast at `multiples` of the current labels, with a bootstrap band.

    `groups` (e.g. the seed of each point): resample whole groups when there are two or more, else points.
    Raises NotEnoughPoints (saying why) below three label counts."""
    n_all, y_all = np.asarray(n, float).ravel(), np.asarray(y, float).ravel()
    g_all = np.zeros(len(n_all)) if groups is None else np.asarray(groups).ravel()
    keep = np.isfinite(n_all) & np.isfinite(y_all) & (n_all > 0)
    n_all, y_all, g_all = n_all[keep], y_all[keep], g_all[keep]
    fit = fit_power_law(n_all, y_all)
    now = float(n_all.max())
    rng = np.random.default_rng(seed)
    fits: list[PowerLaw] = []
    labels = list(dict.fromkeys(g_all.tolist()))
    if len(labels) >= 2:
        idx_of = {g: np.nonzero(g_all == g)[0] for g in labels}
        how = f"bootstrap over {len(labels)} seeds"
        draws = [np.concatenate([idx_of[labels[j]] for j in rng.integers(0, len(labels), len(labels))])
                 for _ in range(boot)]
    elif len(n_all) > MIN_POINTS:
        how = f"bootstrap over {len(n_all)} cycles"
        draws = [rng.integers(0, len(n_all), len(n_all)) for _ in range(boot)]
    else:
        how, draws = "no band: one run with three points has no spread to resample", []
    for idx in draws:
        if len(np.unique(n_all[idx])) >= MIN_POINTS:
            fits.append(fit_power_law(n_all[idx], y_all[idx]))
    if draws and not fits:
        how = "no band: no resample had three label counts"
    q = (0.5 - level / 2, 0.5 + level / 2)
    if fits:
        how += f", {level:.0%} band"

    def band(values) -> tuple[float, float]:
        values = np.asarray(values, float)
        if not len(values):
            return float("nan"), float("nan")
        # inf (never reached) sorts last: a quantile landing on it is inf, which reads "never"
        big = np.where(np.isfinite(values), values, 1e300)
        return tuple(float(v) if v < 1e299 else math.inf for v in (np.quantile(big, p) for p in q))

    at = {}
    for m in multiples:
        lo, hi = band([f(now * m) for f in fits])
        at[float(m)] = (float(fit(now * m)), lo, hi)
    to_target = None
    if target is not None and target > 0:
        lo, hi = band([f.labels_for(target) for f in fits])
        to_target = (fit.labels_for(target), lo, hi)
    return Forecast(fit=fit, now=now, points=len(n_all), at=at, target=target, to_target=to_target,
                    band=how, fits=fits)


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str
    gain_per_1000: float = float("nan")
    gain_high: float = float("nan")


def stop_rule(n, y, *, min_gain: float, horizon: float, groups=None, seed: int = 0,
              fc: Forecast | None = None) -> StopDecision:
    """Stop when the forecast mAP50 gain per 1 000 further labels (over the next `horizon` labels) is
    below `min_gain` and so is the optimistic end of its band (no band, no stop)."""
    try:
        fc = fc or forecast(n, y, groups, seed=seed)
    except NotEnoughPoints as e:
        return StopDecision(False, f"keep labeling: {e}")
    gain, high = fc.gain(horizon), fc.gain_high(horizon)
    said = (f"forecast gain {gain:.4f} mAP50 per 1000 further labels over the next {horizon:g}"
            + (f" (band's optimistic end {high:.4f})" if np.isfinite(high) else
               " (no band yet: the rule waits for four cycles or several seeds)")
            + f", threshold {min_gain:g}")
    if gain < min_gain and np.isfinite(high) and high < min_gain:
        return StopDecision(True, f"stop: {said}: the curve has flattened", gain, high)
    return StopDecision(False, f"keep labeling: {said}", gain, high)
