"""Synthetic text for tests of the text classifier path: snippets whose sentiment words decide the label."""

from __future__ import annotations

import numpy as np
import torch

from unlearn_ops.data.splits import Part

POS = ["great", "wonderful", "brilliant", "superb", "delightful", "moving"]
NEG = ["awful", "boring", "dull", "terrible", "tedious", "clumsy"]
FILL = ["the", "movie", "film", "story", "acting", "plot", "was", "really", "quite", "and", "its"]
MOVIES = ["titanic", "alien", "jaws", "rocky", "heat", "psycho"]


def corpus(n: int, seed: int, prefix: str) -> tuple[Part, np.ndarray]:
    """Synthetic snippets: a movie name, filler, two sentiment words (which decide the label)."""
    rng = np.random.default_rng(seed)
    texts, ys, movies = [], [], []
    for _ in range(n):
        y, movie = int(rng.integers(0, 2)), str(rng.choice(MOVIES))
        words = [movie, *rng.choice(FILL, 3), *rng.choice(POS if y else NEG, 2), *rng.choice(FILL, 2)]
        texts.append(" ".join(words))
        ys.append(y)
        movies.append(movie)
    return Part(tuple(f"syn/{prefix}/{i:05d}" for i in range(n)), np.array(texts), torch.tensor(ys)), np.array(movies)


def corpus_parts(n_train: int, n_eval: int) -> tuple[Part, np.ndarray, Part, Part]:
    """(train, its movie names, test, non-members): the seeded splits the text tests use."""
    train, movies = corpus(n_train, 0, "train")
    return train, movies, corpus(n_eval, 1, "test")[0], corpus(n_eval, 2, "nonmember")[0]


def raw_corpus(n_train: int = 600, n_test: int = 300):
    """The synthetic corpus as a loader's RawDataset (`syn`), movie names in `extra`, for a sample store."""
    from unlearn_ops.data.sources import RawDataset

    train, movies_train = corpus(n_train, 0, "train")
    test, movies_test = corpus(n_test, 1, "test")
    return RawDataset("syn", ("negative", "positive"),
                      {"train": (train.x, train.y.numpy()), "test": (test.x, test.y.numpy())},
                      extra={"train": {"movie_name": movies_train}, "test": {"movie_name": movies_test}})
