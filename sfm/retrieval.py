"""Image retrieval for loop candidates: a small visual vocabulary built on the fly from the features.

No trained vocabulary is downloaded: k-means (OpenCV) clusters a deterministic sample of the set's own
descriptors into ``vocabulary_size`` words; every image becomes a tf-idf weighted, L2-normalised
histogram of words (of at most ``per_image`` of its descriptors), and cosine similarity ranks the other
images. Binary descriptors are clustered as 0/1 bit vectors.

Used by the sequential matcher: besides its ``window`` neighbours, each image is matched with its
``k`` most similar images outside the window, so a camera coming back to a place closes the loop.
"""
from __future__ import annotations

import cv2
import numpy as np


def _as_float(desc: np.ndarray) -> np.ndarray:
    if desc.dtype == np.uint8:
        return np.unpackbits(desc, axis=1).astype(np.float32)
    return np.asarray(desc, np.float32)


def _subsample(desc: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(desc) <= limit:
        return desc
    return desc[np.sort(rng.choice(len(desc), limit, replace=False))]


def _nearest_word(x: np.ndarray, words: np.ndarray) -> np.ndarray:
    # argmin |x - w|^2 = argmax (x.w - |w|^2 / 2): one matrix product.
    return np.argmax(x @ words.T - 0.5 * (words * words).sum(axis=1), axis=1)


def similarity_matrix(descriptors: list, vocabulary_size: int = 256, per_image: int = 1000,
                      seed: int = 0) -> np.ndarray:
    """(n, n) cosine similarity of tf-idf word histograms; 0 for images without descriptors."""
    rng = np.random.default_rng(seed)
    n = len(descriptors)
    samples = [_as_float(_subsample(d, per_image, rng)) for d in descriptors]
    pool = np.vstack([s for s in samples if len(s)]) if any(len(s) for s in samples) else np.zeros((0, 1))
    k = int(min(vocabulary_size, len(pool) // 4))
    if k < 2:
        return np.zeros((n, n))
    train = _subsample(pool, 50 * k, rng)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1e-3)
    _, _, words = cv2.kmeans(train, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    hist = np.zeros((n, k))
    for i, s in enumerate(samples):
        if len(s):
            hist[i] = np.bincount(_nearest_word(s, words), minlength=k)
    df = (hist > 0).sum(axis=0)
    idf = np.log(max(n, 1) / np.maximum(df, 1))
    tfidf = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1) * idf
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
    return tfidf @ tfidf.T


def loop_candidate_pairs(descriptors: list, window: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """(i, j) with i < j, j - i > window: each image's ``k`` most similar images outside its window."""
    n = len(descriptors)
    if k <= 0 or n <= window + 1:
        return []
    sim = similarity_matrix(descriptors, seed=seed)
    pairs = set()
    idx = np.arange(n)
    for i in range(n):
        far = np.flatnonzero((np.abs(idx - i) > window) & (sim[i] > 0))
        for j in far[np.argsort(-sim[i, far], kind="stable")[:k]]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)
