"""The MovieLens adapter: ratings.csv + movies.csv -> raw events and an items table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.ingest.adapters.common import (
    MS,
    PUBLIC_MIN_TS_MS,
    Prepared,
    adapter_report,
    input_files,
    items_table,
    pick,
    read_csv,
    requests,
    sort_order,
    unique_rows,
)

MOVIELENS_POSITIVE_RATING = 4.0


def movielens(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """MovieLens (`ratings.csv` + `movies.csv`, the "latest" / ml-20m / ml-25m CSV layout).

    Protocol (common CTR practice on MovieLens, e.g. DeepCTR/FuxiCTR's MovieLens tasks): a rating of
    4.0 or more is a positive behavior (a click) and one example with `negatives` sampled unrated
    movies; lower ratings are neither behaviors nor examples but still count as interactions, so
    they are never sampled as negatives. A movie's category is its first listed genre
    (`(no genres listed)` when none), a single categorical as DIN's category feature expects.
    Split: time-based, as for logs.
    """
    files = input_files(inputs)
    ratings_path = pick(files, "ratings.csv", lambda p: p.name == "ratings.csv")
    movies_path = pick(files, "movies.csv", lambda p: p.name == "movies.csv")
    ratings = read_csv(str(ratings_path), ["userId", "movieId", "rating", "timestamp"], header=True)
    ratings.require_ids("userId", "movieId")
    ts = ratings.integers("timestamp", "bad_timestamp") * MS
    rating = pd.to_numeric(ratings.column("rating"), errors="coerce").to_numpy()
    ratings.reject(np.isnan(rating) | (rating < 0) | (rating > 5), "wrong_type", "rating")
    ratings.reject(ts < PUBLIC_MIN_TS_MS, "bad_timestamp", "timestamp")
    ratings.finish()

    movies = read_csv(str(movies_path), ["movieId", "title", "genres"], header=True)
    movies.require_ids("movieId")
    movies.finish()
    ok_movies = movies.accepted()
    movie_id = movies.column("movieId").to_numpy(object)[ok_movies]
    genres = movies.column("genres").fillna("").to_numpy(object)[ok_movies]
    genre = np.array([g.split("|")[0] if g else "(no genres listed)" for g in genres], dtype=object)

    ok = ratings.accepted()
    user = ratings.column("userId").to_numpy(object)[ok].astype(str)
    item = ratings.column("movieId").to_numpy(object)[ok].astype(str)
    ts, rating = ts[ok], rating[ok]
    first = unique_rows([user, item, ts, rating])
    user, item, ts, rating = user[first], item[first], ts[first], rating[first]
    positive = rating >= MOVIELENS_POSITIVE_RATING
    order = sort_order(user[positive], ts[positive], item[positive])
    pu, pi, pt = user[positive][order], item[positive][order], ts[positive][order]
    events, stats = requests(
        "ml",
        pu,
        pi,
        pt,
        np.full(len(pu), "click", dtype=object),
        np.ones(len(pu), bool),
        (user, item),
        np.concatenate([item, movie_id.astype(str)]),
        negatives,
        seed,
    )
    report = adapter_report(
        "MovieLens: rating >= 4 is a click and an example with sampled unrated negatives; "
        "first genre is the category; time-based split",
        [ratings, movies],
        int((~first).sum()),
        {"rating_below_4": int((~positive).sum()), "item_metadata_rows": int(ok_movies.sum())},
        int(positive.sum()),
    )
    return Prepared(
        events,
        items_table(movie_id.astype(str), genre),
        [str(ratings_path), str(movies_path)],
        ratings.dead + movies.dead,
        {**report, **stats},
    )
