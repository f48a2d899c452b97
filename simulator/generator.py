"""Synthetic impression/click logs with a known click-probability oracle (docs/generator.md).

The simulated world: a Zipf-popular catalogue grouped into categories and brands; users with
heavy-tailed activity, a few stable long-term interest categories they revisit only sparsely, and
a focus category per session. Every impression's click probability is a closed-form function of
that latent state (never of the realized history), so the simulation vectorizes with numpy and
the oracle is exact.

`p_click_last50` is the same probability with the long-term-interest term kept only for categories
that occur among the user's last 50 behaviors before the impression; the gap between the two AUCs
is the signal a last-50 model cannot see. `p_click_revealed` keeps the session-focus term only once
the session holds a behavior in the focus category and the long-term term only once the history
holds one in that category: what the logs have revealed of the latent state by then.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from seqrank.config import GeneratorConfig
from seqrank.schema import EVENT_TYPES, LATENT_STATES, ORACLE, RAW_EVENT, RAW_ITEMS, RAW_USERS
from seqrank.storage import atomic_dir, write_json, write_table
from training.metrics import auc as roc_auc

log = logging.getLogger(__name__)

# The constants of the generative model. docs/generator.md explains each and how they were tuned;
# change them together with the measured figures there.

# ---- Catalogue ------------------------------------------------------------------------------------
CATEGORY_ZIPF = 0.9  # category sizes ∝ rank^-0.9: a few big categories, a long tail of small ones
ITEM_ZIPF = 0.9  # item popularity ∝ rank^-0.9: Zipf, without one item taking most of the attention
QUALITY_POP_CORR = 0.25  # popular items are somewhat better (logit per sd of log popularity)
QUALITY_SD = 0.25  # item quality noise, independent of popularity
PRICE_LOG_MEAN, PRICE_CAT_SD, PRICE_ITEM_SD = 3.3, 0.9, 0.45  # lognormal price per category

# ---- Users ----------------------------------------------------------------------------------------
ACTIVITY_SIGMA = 1.8  # lognormal sd of a user's session rate: many light users, a few heavy ones
MAX_SESSIONS_PER_DAY = 10.0  # caps the heaviest users so their sessions fit in a day
USER_BIAS_SD = 0.4  # some users click more than others, whatever they see
# Long-term interests are niche: category weight ∝ (attention share)^-2, so they rarely turn up
# by chance and mostly through the interest channel.
LT_NICHE_EXP = -2.0
DEMOGRAPHIC_INTEREST_SD = 0.7  # (age bucket, gender) tilts which categories become interests
AGE_P = (0.08, 0.22, 0.26, 0.2, 0.13, 0.08, 0.03)
GENDERS, GENDER_P = ("F", "M", "U"), (0.48, 0.44, 0.08)

# ---- Sessions ---------------------------------------------------------------------------------------
P_LT_FOCUS = 0.01  # a session focuses on a long-term interest this rarely; else on another category
P_FOCUS_REPEAT = 0.3  # a session keeps the previous session's focus this often (short-term drift)
EXTRA_REQUESTS_MEAN = 2.5  # requests per session = 1 + Poisson(2.5), capped
MAX_REQUESTS = 12
SESSION_GAP_MIN_MS = 45 * 60_000  # gap between a user's sessions, always well over 30 minutes

# ---- Channels that fill a slate ---------------------------------------------------------------------
# The focus channel recalls from the session's focus category; a recommender only learns the
# intent from in-session behavior, so the first request of a session carries less of it.
P_FOCUS_CHANNEL_FIRST, P_FOCUS_CHANNEL_LATER = 0.25, 0.5
# The interest channel recalls from the long-term profile: in some requests, a block of slots from
# one category (a "because you like ..." carousel), usually a long-term interest, else a random one.
P_INTEREST_REQUEST = 0.08
INTEREST_SLOTS = 5
P_INTEREST_IS_LT = 0.7
# Remaining slots come from global popularity. The production ranker orders the slate by a noisy
# view of relevance, so better items tend to sit higher (position and relevance are confounded).
RANK_SCORE_WEIGHT, RANK_NOISE_SD = 0.3, 1.0

# ---- Click model: logit = BASE + user bias + item quality + position + focus + long-term ------------
BASE_LOGIT = -3.7
POSITION_DECAY = 0.45  # position term = -0.45 * ln(position)
W_FOCUS = 1.6  # item in the session's focus category
W_LONG_TERM = 3.2  # item in one of the user's long-term interest categories
LAST_N = 50  # the window p_click_last50 is restricted to

# ---- Post-click funnel --------------------------------------------------------------------------------
P_CART, P_FAV, P_BUY_GIVEN_CART = 0.12, 0.06, 0.35

# ---- Delays in ms: (median, lognormal sigma, min, max) --------------------------------------------------
# Every gap inside a session is at most 15 minutes, so the 30-minute sessionizer of ingest finds
# exactly the simulated sessions.
CLICK_DELAY = (15_000, 0.9, 2_000, 150_000)  # after the impression
THINK_TIME = (30_000, 1.0, 3_000, 480_000)  # before the next request, after the request's last click
CART_DELAY = (60_000, 1.0, 5_000, 600_000)  # after the click
FAV_DELAY = (20_000, 1.0, 2_000, 300_000)  # after the click
BUY_DELAY = (180_000, 0.8, 20_000, 900_000)  # after the cart

DAY_MS = 86_400_000
HEAVY_USER_BEHAVIORS = 200  # "heavy" users in the long-term statistics
HISTORY_SLICES = ((0, 50), (50, 200), (200, None))  # hist_end slices the summary reports AUCs on

# The files `generate` writes. Ingest recognises a folder holding them (the events twice, as JSONL
# and Parquet; the side tables; the oracle and summary, which are no events) by these names.
EVENTS_JSONL = "events.jsonl"
EVENTS_PARQUET = "events.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
ORACLE_FILE = "oracle.parquet"
SUMMARY_FILE = "summary.json"
_STAGES = ("catalogue and users", "sessions", "slates and clicks", "timeline", "oracle", "tables")
_JSONL_CHUNK = 1_000_000


@dataclass(frozen=True)
class Simulation:
    """Everything one simulation produced, before it is written.

    `event_session` is the true session of every row of `events`; `hist_end` (behaviors strictly
    before the impression), `p_click_history` (the oracle restricted to the whole history) and
    `focus` (the focus category index of the impression's session) are aligned with the rows of
    `oracle`; `long_term[u]` are user u's long-term interest categories (indices, "c{index}" raw
    ids). Tests and diagnostics use them; they are not written.
    """

    events: pa.Table
    users: pa.Table
    items: pa.Table
    oracle: pa.Table
    summary: dict[str, Any]
    event_session: np.ndarray
    hist_end: np.ndarray
    p_click_history: np.ndarray
    focus: np.ndarray
    long_term: np.ndarray


# ---- small helpers ------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _delays(rng: np.random.Generator, n: int, spec: tuple[int, float, int, int]) -> np.ndarray:
    median, sigma, lo, hi = spec
    return np.clip(np.rint(median * rng.lognormal(0.0, sigma, n)), lo, hi).astype(np.int64)


def _group_first(groups: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's group, for an array sorted by group."""
    is_first = np.ones(len(groups), dtype=bool)
    is_first[1:] = groups[1:] != groups[:-1]
    return np.maximum.accumulate(np.where(is_first, np.arange(len(groups)), 0))


def _sample(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), len(weights) - 1)


def _start_ms(start: str) -> int:
    moment = datetime.fromisoformat(start)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _ids(prefix: str, index: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(index, pa.int64()), pa.string()), "")


def _mean(values: npt.ArrayLike) -> float:
    arr = np.asarray(values)
    return float(arr.mean()) if arr.size else float("nan")


def _round(x: float) -> float | None:
    # JSON has no NaN; tiny configs can lack clicks or heavy users.
    return None if x != x else round(float(x), 6)


def oracle_auc(oracle: pa.Table) -> tuple[float, float]:
    """AUC of `p_click` and of `p_click_last50` against `clicked` over an ORACLE table.

    Returns:
        (oracle AUC, last-50 oracle AUC); NaN where the table lacks clicks or non-clicks.
    """
    clicked = oracle.column("clicked").to_numpy()
    return (
        roc_auc(clicked, oracle.column("p_click").to_numpy()),
        roc_auc(clicked, oracle.column("p_click_last50").to_numpy()),
    )


# ---- the latent world -------------------------------------------------------------------------------------


class _Catalogue:
    """Items with category, brand, price, popularity and latent quality, plus item samplers."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        n, n_cat = cfg.items, cfg.categories
        # Every category gets at least one item; the rest follow uneven Zipf shares.
        sizes = 1 + rng.multinomial(n - n_cat, rng.permutation(_zipf(n_cat, CATEGORY_ZIPF)))
        self.category = rng.permutation(np.repeat(np.arange(n_cat), sizes))
        self.popularity = _zipf(n, ITEM_ZIPF)[rng.permutation(n)]
        # A category's share of attention is the popularity its items hold, not its item count.
        self.category_mass = np.bincount(self.category, weights=self.popularity, minlength=n_cat)
        log_pop = np.log(self.popularity)
        self.quality = QUALITY_POP_CORR * (log_pop - log_pop.mean()) / log_pop.std()
        self.quality += rng.normal(0.0, QUALITY_SD, n)
        # Brands belong to categories (brand b lives in category b % C); within a category a few
        # brands dominate (u² skews the pick towards the category's first brands).
        if cfg.brands >= n_cat:
            per_cat = (cfg.brands - np.arange(n_cat) + n_cat - 1) // n_cat
            pick = np.floor(per_cat[self.category] * rng.random(n) ** 2).astype(np.int64)
            self.brand = self.category + n_cat * pick
        else:
            self.brand = self.category % cfg.brands
        cat_mu = rng.normal(PRICE_LOG_MEAN, PRICE_CAT_SD, n_cat)
        log_price = cat_mu[self.category] + rng.normal(0.0, PRICE_ITEM_SD, n)
        self.price = np.maximum(np.round(np.exp(log_price), 2), 0.5)
        # Samplers: a global popularity CDF, and per-category CDFs laid end to end so that category
        # c occupies (c, c + 1] of one sorted array and one searchsorted serves every category.
        self._global_cdf = np.cumsum(self.popularity) / self.popularity.sum()
        self._by_category = np.argsort(self.category, kind="stable")
        cats = self.category[self._by_category]
        pop = self.popularity[self._by_category]
        before = np.concatenate([[0.0], np.cumsum(self.category_mass)[:-1]])
        self._category_cdf = cats + (np.cumsum(pop) - before[cats]) / self.category_mass[cats]
        self._category_end = np.cumsum(np.bincount(cats, minlength=n_cat))

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = np.searchsorted(self._global_cdf, rng.random(n), side="right")
        return np.minimum(idx, len(self.popularity) - 1)

    def in_category(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self._category_cdf, categories + rng.random(len(categories)), side="left")
        # Float rounding can land one past a category's last item; clamp into the category.
        return self._by_category[np.minimum(idx, self._category_end[categories] - 1)]


class _Users:
    """Demographics, activity, click bias and long-term interests of every user."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator, catalogue: _Catalogue) -> None:
        n, n_cat = cfg.users, cfg.categories
        self.age = rng.choice(len(AGE_P), size=n, p=AGE_P)
        self.gender = rng.choice(len(GENDERS), size=n, p=GENDER_P)
        weight = rng.lognormal(0.0, ACTIVITY_SIGMA, n)
        rate = cfg.sessions_per_day * weight / weight.mean()
        # Capping the heaviest users lowers the mean; spread the difference back over the others.
        for _ in range(5):
            rate = np.minimum(rate, MAX_SESSIONS_PER_DAY)
            rate *= cfg.sessions_per_day / rate.mean()
        self.rate = np.minimum(rate, MAX_SESSIONS_PER_DAY)
        self.bias = rng.normal(0.0, USER_BIAS_SD, n)
        # Long-term interests: k distinct categories by the Gumbel-top-k trick, favouring niche
        # categories, tilted by the user's demographic group so profiles carry some signal.
        group = self.age * len(GENDERS) + self.gender
        tilt = rng.normal(0.0, DEMOGRAPHIC_INTEREST_SD, (len(AGE_P) * len(GENDERS), n_cat))
        niche = LT_NICHE_EXP * np.log(catalogue.category_mass)
        scores = niche[None, :] + tilt[group] + rng.gumbel(size=(n, n_cat))
        self.long_term = np.argsort(-scores, axis=1, kind="stable")[:, : cfg.long_term_interests]
        self.is_long_term = np.zeros((n, n_cat), dtype=bool)
        np.put_along_axis(self.is_long_term, self.long_term, True, axis=1)

    def pick_long_term(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        return self.long_term[users, rng.integers(0, self.long_term.shape[1], len(users))]


@dataclass(frozen=True)
class _Sessions:
    user: np.ndarray  # (S,) sessions grouped by user, in time order within a user
    focus: np.ndarray  # (S,) focus category
    n_requests: np.ndarray  # (S,)


def _sessions(cfg: GeneratorConfig, rng: np.random.Generator, usr: _Users, cat: _Catalogue) -> _Sessions:
    user = np.repeat(np.arange(cfg.users), rng.poisson(usr.rate * cfg.days))
    n = len(user)
    # "Usually not a long-term one": redraw other-focus sessions that hit a long-term category.
    fresh = _sample(rng, cat.category_mass, n)
    for _ in range(20):
        clash = np.flatnonzero(usr.is_long_term[user, fresh])
        if not len(clash):
            break
        fresh[clash] = _sample(rng, cat.category_mass, len(clash))
    fresh = np.where(rng.random(n) < P_LT_FOCUS, usr.pick_long_term(rng, user), fresh)
    # Short-term drift: a session may keep the previous session's focus (a forward fill).
    redraw = (_group_first(user) == np.arange(n)) | (rng.random(n) >= P_FOCUS_REPEAT)
    focus = fresh[np.maximum.accumulate(np.where(redraw, np.arange(n), 0))]
    n_requests = np.minimum(1 + rng.poisson(EXTRA_REQUESTS_MEAN, n), MAX_REQUESTS)
    return _Sessions(user=user, focus=focus, n_requests=n_requests)


@dataclass(frozen=True)
class _Impressions:
    """One row per impression, request-major and in position order within a request."""

    request: np.ndarray  # request index; request r belongs to session request_session[r]
    request_session: np.ndarray
    user: np.ndarray
    item: np.ndarray
    category: np.ndarray
    focus: np.ndarray  # the session's focus category
    position: np.ndarray  # 1-based
    lt_match: np.ndarray  # item category is one of the user's long-term interests
    logit_short: np.ndarray  # the click logit without the long-term term
    p_click: np.ndarray
    clicked: np.ndarray


def _distinct_per_request(
    rng: np.random.Generator,
    cat: _Catalogue,
    request: np.ndarray,
    item: np.ndarray,
    slot_cat: np.ndarray,
    from_category: np.ndarray,
) -> np.ndarray:
    """Redraw items repeated within a request until no slate shows an item twice.

    A repeat is redrawn from its slot's channel first (its category, or global popularity); a small
    category may run out of distinct items, so later rounds draw from popularity, then uniformly.
    """
    n_items = len(cat.popularity)
    for attempt in range(1000):
        key = request * n_items + item
        order = np.argsort(key, kind="stable")
        dup = np.zeros(len(key), dtype=bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not dup.any():
            return item
        if attempt < 10:
            in_cat = np.flatnonzero(dup & from_category)
            item[in_cat] = cat.in_category(rng, slot_cat[in_cat])
            popular = np.flatnonzero(dup & ~from_category)
            item[popular] = cat.popular(rng, len(popular))
        elif attempt < 20:
            item[dup] = cat.popular(rng, int(dup.sum()))
        else:
            item[dup] = rng.integers(0, n_items, int(dup.sum()))
    raise RuntimeError("could not fill slates with distinct items")


def _slates(
    cfg: GeneratorConfig, rng: np.random.Generator, usr: _Users, cat: _Catalogue, ses: _Sessions
) -> _Impressions:
    k = cfg.slate_size
    r_session = np.repeat(np.arange(len(ses.user)), ses.n_requests)
    n_r = len(r_session)
    r_first = _group_first(r_session) == np.arange(n_r)
    r_user = ses.user[r_session]
    r_focus = ses.focus[r_session]

    # Channels: interest block, focus category, else global popularity.
    p_focus = np.where(r_first, P_FOCUS_CHANNEL_FIRST, P_FOCUS_CHANNEL_LATER)[:, None]
    is_focus = rng.random((n_r, k)) < p_focus
    has_block = rng.random(n_r) < P_INTEREST_REQUEST
    is_interest = has_block[:, None] & (np.arange(k) < INTEREST_SLOTS)[None, :]
    block_cat = np.where(
        rng.random(n_r) < P_INTEREST_IS_LT,
        usr.pick_long_term(rng, r_user),
        _sample(rng, cat.category_mass, n_r),
    )
    slot_cat = np.where(is_interest, block_cat[:, None], r_focus[:, None]).ravel()
    from_category = (is_focus | is_interest).ravel()
    item = cat.popular(rng, n_r * k)
    item[from_category] = cat.in_category(rng, slot_cat[from_category])
    request = np.repeat(np.arange(n_r, dtype=np.int64), k)
    item = _distinct_per_request(rng, cat, request, item, slot_cat, from_category).reshape(n_r, k)

    # The production ranker orders each slate; positions follow its order.
    i_cat = cat.category[item]
    focus_match = i_cat == r_focus[:, None]
    lt_match = usr.is_long_term[r_user[:, None], i_cat]
    relevance = cat.quality[item] + W_FOCUS * focus_match + W_LONG_TERM * lt_match
    rank_score = RANK_SCORE_WEIGHT * relevance + rng.normal(0.0, RANK_NOISE_SD, (n_r, k))
    order = np.argsort(-rank_score, axis=1, kind="stable")
    item, i_cat, focus_match, lt_match = (
        np.take_along_axis(a, order, axis=1).ravel() for a in (item, i_cat, focus_match, lt_match)
    )
    position = np.tile(np.arange(1, k + 1, dtype=np.int32), n_r)
    user = r_user[request]

    # The click model: latent state only, never the realized history.
    logit_short = (
        BASE_LOGIT
        + usr.bias[user]
        + cat.quality[item]
        - POSITION_DECAY * np.log(position)
        + W_FOCUS * focus_match
    )
    p_click = _sigmoid(logit_short + W_LONG_TERM * lt_match)
    clicked = rng.random(len(p_click)) < p_click
    return _Impressions(
        request=request,
        request_session=r_session,
        user=user,
        item=item,
        category=i_cat,
        focus=r_focus[request],
        position=position,
        lt_match=lt_match,
        logit_short=logit_short,
        p_click=p_click,
        clicked=clicked,
    )


@dataclass(frozen=True)
class _Timeline:
    """Every event, sorted by ts; `src` is the impression each event belongs to."""

    ts: np.ndarray
    etype: np.ndarray  # index into EVENT_TYPES
    src: np.ndarray
    session: np.ndarray
    n_sessions: int
    n_requests: int


def _timeline(cfg: GeneratorConfig, rng: np.random.Generator, ses: _Sessions, imp: _Impressions) -> _Timeline:
    """Post-click funnel and timestamps: ms offsets inside sessions, then sessions on the calendar."""
    n_s, n_r = len(ses.user), len(imp.request_session)
    click = np.flatnonzero(imp.clicked)
    n_clk = len(click)
    carted = rng.random(n_clk) < P_CART
    faved = rng.random(n_clk) < P_FAV
    bought = carted & (rng.random(n_clk) < P_BUY_GIVEN_CART)

    # The next request comes after the request's last click plus some think time.
    click_delay = _delays(rng, n_clk, CLICK_DELAY)
    busy = np.zeros(n_r, dtype=np.int64)
    np.maximum.at(busy, imp.request[click], click_delay)
    step = busy + _delays(rng, n_r, THINK_TIME)
    before = np.cumsum(step) - step
    r_offset = before - before[_group_first(imp.request_session)]
    click_off = r_offset[imp.request[click]] + click_delay
    cart_off = click_off[carted] + _delays(rng, int(carted.sum()), CART_DELAY)
    fav_off = click_off[faved] + _delays(rng, int(faved.sum()), FAV_DELAY)
    cart_of_click = np.zeros(n_clk, dtype=np.int64)
    cart_of_click[carted] = cart_off
    buy_off = cart_of_click[bought] + _delays(rng, int(bought.sum()), BUY_DELAY)  # bought ⊆ carted

    click_ses = imp.request_session[imp.request[click]]
    duration = np.zeros(n_s, dtype=np.int64)
    np.maximum.at(duration, imp.request_session, r_offset)
    for ses_of, off in (
        (click_ses, click_off),
        (click_ses[carted], cart_off),
        (click_ses[faved], fav_off),
        (click_ses[bought], buy_off),
    ):
        np.maximum.at(duration, ses_of, off)

    # Sessions sit at sorted uniform points of the slack each user's span leaves after every
    # session's duration plus the minimum gap, so gaps are never below the minimum. A user whose
    # sessions would not fit in the span loses the overflowing ones (rare: capped heavy users).
    span = cfg.days * DAY_MS
    footprint = duration + SESSION_GAP_MIN_MS
    cum = np.cumsum(footprint)
    first = _group_first(ses.user)
    fp_before = cum - footprint - (cum[first] - footprint[first])
    keep = fp_before + footprint <= span
    used = np.bincount(ses.user, weights=np.where(keep, footprint, 0), minlength=cfg.users)
    draw = rng.random(n_s) * np.maximum(span - used, 0)[ses.user]
    draw = draw[np.lexsort((draw, ses.user))]
    start = _start_ms(cfg.start) + np.floor(draw).astype(np.int64) + fp_before

    # Rows of one kind stay in generation order, so a stable sort by ts breaks ties the same way
    # every run (a slate's impressions keep their position order).
    imp_ses = imp.request_session[imp.request]
    parts = (
        (np.arange(len(imp.item)), start[imp_ses] + r_offset[imp.request]),
        (click, start[click_ses] + click_off),
        (click[carted], start[click_ses[carted]] + cart_off),
        (click[faved], start[click_ses[faved]] + fav_off),
        (click[bought], start[click_ses[bought]] + buy_off),
    )
    src = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    etype = np.concatenate([np.full(len(p[0]), code, dtype=np.int8) for code, p in enumerate(parts)])
    kept = keep[imp_ses[src]]
    src, ts, etype = src[kept], ts[kept], etype[kept]
    order = np.argsort(ts, kind="stable")
    src, ts, etype = src[order], ts[order], etype[order]
    return _Timeline(
        ts=ts,
        etype=etype,
        src=src,
        session=imp_ses[src],
        n_sessions=int(keep.sum()),
        n_requests=int(keep[imp.request_session].sum()),
    )


# ---- the oracle restricted to observed history ------------------------------------------------------------


class _History:
    """Each user's behaviors (positive events) in time order, indexed for point-in-time queries."""

    def __init__(self, tl: _Timeline, imp: _Impressions, n_users: int, n_cat: int) -> None:
        rows = np.flatnonzero(tl.etype > 0)
        rows = rows[np.argsort(imp.user[tl.src[rows]], kind="stable")]  # by user, then time
        self.rows = rows
        self.user = imp.user[tl.src[rows]]
        self.category = imp.category[tl.src[rows]]
        self.count = np.bincount(self.user, minlength=n_users)
        self.first = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self._n_cat = n_cat
        self._t0 = int(tl.ts[0]) if len(tl.ts) else 0
        self._ts_mod = int(tl.ts[-1]) - self._t0 + 1 if len(tl.ts) else 1
        self._ts_key = self.user.astype(np.int64) * self._ts_mod + (tl.ts[rows] - self._t0)
        idx = np.arange(len(rows)) - self.first[self.user]
        self._n_hist = int(self.count.max(initial=0)) + 1
        group = self.user.astype(np.int64) * n_cat + self.category
        self._cat_key = np.sort(group * self._n_hist + idx)

    def hist_end(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """How many of the user's behaviors happened strictly before `ts`."""
        key = users.astype(np.int64) * self._ts_mod + (ts - self._t0)
        return np.searchsorted(self._ts_key, key, side="left") - self.first[users]

    def last_in_category(self, users: np.ndarray, cats: np.ndarray, before: np.ndarray) -> np.ndarray:
        """Per-user index of the latest behavior in category `cats` with index < `before`, or -1."""
        if not len(self._cat_key):
            return np.full(len(users), -1, dtype=np.int64)
        group = users.astype(np.int64) * self._n_cat + cats
        j = np.searchsorted(self._cat_key, group * self._n_hist + before, side="left") - 1
        hit = self._cat_key[np.maximum(j, 0)]
        return np.where((j >= 0) & (hit // self._n_hist == group), hit % self._n_hist, -1)


# ---- tables, summary, files -----------------------------------------------------------------------------


def _check(cfg: GeneratorConfig) -> None:
    problems = []
    if cfg.items < max(cfg.categories, cfg.slate_size):
        problems.append(
            f"items = {cfg.items} must be at least categories = {cfg.categories} "
            f"and slate_size = {cfg.slate_size}"
        )
    if cfg.long_term_interests >= cfg.categories:
        problems.append(
            f"long_term_interests = {cfg.long_term_interests} must be below categories = "
            f"{cfg.categories}: sessions also need other categories to focus on"
        )
    if problems:
        raise ValueError("invalid generator config: " + "; ".join(problems))


class _Progress:
    """Logs each stage and, when asked, shows the stages as a rich progress bar."""

    def __init__(self, bar: Any | None) -> None:
        self._bar = bar
        self._task = bar.add_task("generating logs", total=len(_STAGES)) if bar is not None else None
        self._t0 = time.perf_counter()

    def done(self, stage: str) -> None:
        log.debug("generator: %s done at %.2fs", stage, time.perf_counter() - self._t0)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"generating logs: {stage}")


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[_Progress]:
    if not show:
        yield _Progress(None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        yield _Progress(bar)


def simulate(cfg: GeneratorConfig, progress: bool = False) -> Simulation:
    """Simulate the world of `cfg` and return its tables and summary, without writing anything."""
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_cat = cfg.categories
    with _progress(progress) as stages:
        cat = _Catalogue(cfg, rng)
        usr = _Users(cfg, rng, cat)
        stages.done(_STAGES[0])
        ses = _sessions(cfg, rng, usr, cat)
        stages.done(_STAGES[1])
        imp = _slates(cfg, rng, usr, cat, ses)
        stages.done(_STAGES[2])
        tl = _timeline(cfg, rng, ses, imp)
        stages.done(_STAGES[3])

        # Oracles restricted to the behaviors strictly before each impression. Only impressions
        # in a long-term or the focus category can differ from p_click, so only they are looked up.
        hist = _History(tl, imp, cfg.users, n_cat)
        imp_rows = np.flatnonzero(tl.etype == 0)
        o_src = tl.src[imp_rows]
        o_user = imp.user[o_src]
        hist_end = hist.hist_end(o_user, tl.ts[imp_rows])
        o_lt = imp.lt_match[o_src]
        o_focus = imp.focus[o_src] == imp.category[o_src]
        last = np.full(len(imp_rows), -1, dtype=np.int64)
        q = np.flatnonzero(o_lt | o_focus)
        last[q] = hist.last_in_category(o_user[q], imp.category[o_src[q]], hist_end[q])
        seen_ever = last >= 0
        seen_last50 = seen_ever & (last >= hist_end - LAST_N)
        last_row = hist.rows[np.maximum(hist.first[o_user] + last, 0)] if len(hist.rows) else imp_rows
        seen_in_session = seen_ever & (tl.session[last_row] == tl.session[imp_rows])
        logit_short = imp.logit_short[o_src]
        p_last50 = _sigmoid(logit_short + W_LONG_TERM * (o_lt & seen_last50))
        p_history = _sigmoid(logit_short + W_LONG_TERM * (o_lt & seen_ever))
        hidden_focus = o_focus & ~seen_in_session
        p_revealed = _sigmoid(logit_short - W_FOCUS * hidden_focus + W_LONG_TERM * (o_lt & seen_ever))
        # The first state that holds (a long-term category that is also the focus is long-term).
        states = {
            "long_term_seen": o_lt & seen_ever,
            "long_term_unseen": o_lt,
            "focus_seen": o_focus & seen_in_session,
            "focus_unseen": o_focus,
        }
        latent = np.select(
            list(states.values()),
            [LATENT_STATES.index(name) for name in states],
            LATENT_STATES.index("neither"),
        )
        stages.done(_STAGES[4])

        events, oracle, users, items = _tables(cfg, usr, cat, imp, tl, imp_rows, p_last50, p_revealed, latent)
        summary = _summary(cfg, usr, imp, tl, hist, oracle, imp_rows, hist_end, seen_last50, p_history)
        stages.done(_STAGES[5])
    return Simulation(
        events=events,
        users=users,
        items=items,
        oracle=oracle,
        summary=summary,
        event_session=tl.session,
        hist_end=hist_end,
        p_click_history=p_history,
        focus=imp.focus[o_src],
        long_term=usr.long_term,
    )


def _tables(
    cfg: GeneratorConfig,
    usr: _Users,
    cat: _Catalogue,
    imp: _Impressions,
    tl: _Timeline,
    imp_rows: np.ndarray,
    p_last50: np.ndarray,
    p_revealed: np.ndarray,
    latent: np.ndarray,
) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    user_names = _ids("u", np.arange(cfg.users))
    item_names = _ids("i", np.arange(cfg.items))
    cat_names = _ids("c", np.arange(cfg.categories))
    event_id = _ids("e", np.arange(len(tl.ts)))
    user_id = user_names.take(pa.array(imp.user[tl.src]))
    item_id = item_names.take(pa.array(imp.item[tl.src]))
    events = pa.table(
        {
            "ts": pa.array(tl.ts, pa.int64()),
            "user_id": user_id,
            "item_id": item_id,
            "event_type": pa.array(EVENT_TYPES, pa.string()).take(pa.array(tl.etype)),
            "event_id": event_id,
            "request_id": _ids("r", imp.request[tl.src]),
            # Only impressions and clicks have a slate position.
            "position": pa.array(imp.position[tl.src], pa.int32(), mask=tl.etype > 1),
            "category_id": cat_names.take(pa.array(imp.category[tl.src])),
        },
        schema=RAW_EVENT,
    )
    take = pa.array(imp_rows)
    o_src = tl.src[imp_rows]
    oracle = pa.table(
        {
            "event_id": event_id.take(take),
            "user_id": user_id.take(take),
            "item_id": item_id.take(take),
            "ts": pa.array(tl.ts[imp_rows], pa.int64()),
            "p_click": pa.array(imp.p_click[o_src], pa.float64()),
            "p_click_last50": pa.array(p_last50, pa.float64()),
            "p_click_revealed": pa.array(p_revealed, pa.float64()),
            "clicked": pa.array(imp.clicked[o_src].astype(np.int8), pa.int8()),
            "latent_state": pa.array(LATENT_STATES, pa.string()).take(pa.array(latent)),
        },
        schema=ORACLE,
    )
    users = pa.table(
        {
            "user_id": user_names,
            "age_bucket": pa.array(usr.age, pa.int32()),
            "gender": pa.array(GENDERS, pa.string()).take(pa.array(usr.gender)),
        },
        schema=RAW_USERS,
    )
    items = pa.table(
        {
            "item_id": item_names,
            "category_id": cat_names.take(pa.array(cat.category)),
            "brand_id": _ids("b", np.arange(cfg.brands)).take(pa.array(cat.brand)),
            "price": pa.array(cat.price, pa.float64()),
        },
        schema=RAW_ITEMS,
    )
    return events, oracle, users, items


def _summary(
    cfg: GeneratorConfig,
    usr: _Users,
    imp: _Impressions,
    tl: _Timeline,
    hist: _History,
    oracle: pa.Table,
    imp_rows: np.ndarray,
    hist_end: np.ndarray,
    seen_last50: np.ndarray,
    p_history: np.ndarray,
) -> dict[str, Any]:
    o_src = tl.src[imp_rows]
    clicked = imp.clicked[o_src]
    o_lt = imp.lt_match[o_src]
    p = oracle.column("p_click").to_numpy()
    p50 = oracle.column("p_click_last50").to_numpy()
    p_revealed = oracle.column("p_click_revealed").to_numpy()
    counts = {name: int((tl.etype == code).sum()) for code, name in enumerate(EVENT_TYPES)}
    auc, auc50 = oracle_auc(oracle)

    by_history = {}
    for lo, hi in HISTORY_SLICES:
        m = (hist_end >= lo) & (hist_end < (hi if hi is not None else np.iinfo(np.int64).max))
        by_history[f"{lo}+" if hi is None else f"{lo}-{hi - 1}"] = {
            "impression_share": _round(_mean(m)),
            "oracle_auc": _round(roc_auc(clicked[m], p[m])),
            "oracle_last50_auc": _round(roc_auc(clicked[m], p50[m])),
            "oracle_history_auc": _round(roc_auc(clicked[m], p_history[m])),
            "oracle_revealed_auc": _round(roc_auc(clicked[m], p_revealed[m])),
        }

    # Long-term interests at the end of the log, for users with a long history.
    k = cfg.long_term_interests
    heavy = np.flatnonzero(hist.count >= HEAVY_USER_BEHAVIORS)
    heavy_rep = np.repeat(heavy, k)
    last = hist.last_in_category(heavy_rep, usr.long_term[heavy].ravel(), hist.count[heavy_rep])
    last = last.reshape(-1, k)
    n_beh = hist.count[heavy][:, None]

    # The short-term signal: does the session's focus already show in the session's behaviors?
    r_first = _group_first(imp.request_session)
    later = np.flatnonzero(r_first[imp.request[o_src]] != imp.request[o_src])  # not a session's first
    l_user = imp.user[o_src[later]]
    f_last = hist.last_in_category(l_user, imp.focus[o_src[later]], hist_end[later])
    f_row = hist.rows[np.maximum(hist.first[l_user] + f_last, 0)] if len(hist.rows) else later
    focus_seen = (f_last >= 0) & (tl.session[f_row] == tl.session[imp_rows[later]])

    behaviors = hist.count
    return {
        "events": len(tl.ts),
        "counts": counts,
        "users": cfg.users,
        "active_users": int((np.bincount(imp.user[tl.src], minlength=cfg.users) > 0).sum()),
        "items": cfg.items,
        "categories": cfg.categories,
        "brands": cfg.brands,
        "sessions": tl.n_sessions,
        "requests": tl.n_requests,
        "ctr": _round(counts["click"] / max(counts["impression"], 1)),
        "first_ts": int(tl.ts[0]) if len(tl.ts) else None,
        "last_ts": int(tl.ts[-1]) if len(tl.ts) else None,
        "oracle_auc": _round(auc),
        "oracle_last50_auc": _round(auc50),
        "oracle_history_auc": _round(roc_auc(clicked, p_history)),
        "oracle_revealed_auc": _round(roc_auc(clicked, p_revealed)),
        "auc_by_history": by_history,
        "behaviors_per_user": {
            "mean": _round(_mean(behaviors)),
            "median": int(np.median(behaviors)),
            "p90": int(np.quantile(behaviors, 0.9)),
            "p99": int(np.quantile(behaviors, 0.99)),
            "max": int(behaviors.max(initial=0)),
            "users_200_plus": int((behaviors >= 200).sum()),
            "users_1000_plus": int((behaviors >= 1000).sum()),
        },
        "long_term": {
            "behavior_share": _round(_mean(usr.is_long_term[hist.user, hist.category])),
            "impression_share": _round(_mean(o_lt)),
            "click_share": _round(_mean(o_lt[clicked])),
            "ctr": _round(_mean(clicked[o_lt])),
            "impressions_unseen_in_last50": _round(_mean(~seen_last50[o_lt])),
            "heavy_users": len(heavy),
            "heavy_last50_miss_any": _round(_mean((last < n_beh - LAST_N).any(axis=1))),
            "heavy_last1000_has_all": _round(_mean((last >= n_beh - 1000).all(axis=1))),
            "heavy_history_has_all": _round(_mean((last >= 0).all(axis=1))),
        },
        "short_term": {
            "focus_impression_share": _round(_mean(imp.focus[o_src] == imp.category[o_src])),
            "focus_seen_in_session": _round(_mean(focus_seen)),
        },
        "config": cfg.model_dump(),
    }


def _write_jsonl(events: pa.Table, path: Path) -> None:
    """One JSON object per line, built column-wise by Arrow (generated ids need no escaping)."""
    with open(path, "wb") as f:
        for start in range(0, events.num_rows, _JSONL_CHUNK):
            part = events.slice(start, _JSONL_CHUNK)
            col = {name: part.column(name).combine_chunks() for name in part.column_names}
            line = pc.binary_join_element_wise(
                '{"ts":',
                pc.cast(col["ts"], pa.string()),
                ',"user_id":"',
                col["user_id"],
                '","item_id":"',
                col["item_id"],
                '","event_type":"',
                col["event_type"],
                '","event_id":"',
                col["event_id"],
                '","request_id":"',
                col["request_id"],
                '","position":',
                pc.cast(col["position"], pa.string()).fill_null("null"),
                ',"category_id":"',
                col["category_id"],
                '"}\n',
                "",
            )
            # The lines lie back to back in the string array's data buffer: write it in one go.
            offsets = np.frombuffer(line.buffers()[1], dtype=np.int32)[
                line.offset : line.offset + len(line) + 1
            ]
            f.write(memoryview(line.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def generate(cfg: GeneratorConfig, out: Path, progress: bool = False) -> dict:
    """Write raw logs into `out` atomically (seqrank.storage.atomic_dir) and return the summary dict.

    Files: events.jsonl and events.parquet (RAW_EVENT rows sorted by ts), users.parquet (RAW_USERS),
    items.parquet (RAW_ITEMS), oracle.parquet (ORACLE, one row per impression), summary.json.
    The same config gives byte-identical files.
    """
    started = time.perf_counter()
    sim = simulate(cfg, progress=progress)
    with atomic_dir(out) as tmp:
        _write_jsonl(sim.events, tmp / EVENTS_JSONL)
        write_table(sim.events, tmp / EVENTS_PARQUET, RAW_EVENT)
        write_table(sim.users, tmp / USERS_FILE, RAW_USERS)
        write_table(sim.items, tmp / ITEMS_FILE, RAW_ITEMS)
        write_table(sim.oracle, tmp / ORACLE_FILE, ORACLE)
        write_json(tmp / SUMMARY_FILE, sim.summary)
    s = sim.summary
    log.info(
        "generated %d events (%d impressions, ctr %s) in %.1fs: oracle AUC %s, last-50 AUC %s",
        s["events"],
        s["counts"]["impression"],
        s["ctr"],
        time.perf_counter() - started,
        s["oracle_auc"],
        s["oracle_last50_auc"],
    )
    return s
