"""Place recognition with a bag of binary words trained on the fly (DBoW2's scheme, our own vocabulary).

Vocabulary: a tree of ORB descriptors built by hierarchical k-majority clustering (k-means for Hamming
space: a centre is the bitwise majority of its members) from the descriptors of the first keyframes of
the map -- nothing is downloaded or shipped; the scene itself trains it once, then it is frozen so that
every keyframe's vector stays comparable. A descriptor's word is the leaf reached by descending to the
nearest child centre at each level.

Keyframe vectors: TF-IDF weights (IDF from the training keyframes), L1-normalised; similarity is DBoW2's
L1 score ``1 - 0.5 |v1 - v2|_1`` in [0, 1]. ``KeyframeDatabase`` keeps an inverted index (word ->
keyframes) so a query only scores keyframes sharing words with it.

``PlaceRecognizer`` ties both together for the SLAM system: it keeps the keyframes' descriptors, trains
once there are enough, and trains again from all keyframes each time the map has doubled, until the
training set reached its cap (a vocabulary from the first few keyframes alone has too few words to tell
places apart); every retraining re-indexes all keyframes, so scores stay comparable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from geometry.matching import _hamming, descriptor_words


@dataclass(frozen=True)
class BowOptions:
    branching: int = 10                  # children per node
    depth: int = 4                       # levels: branching ** depth words at most
    iterations: int = 8                  # k-majority rounds per node
    min_training_keyframes: int = 5
    min_training_descriptors: int = 5000
    max_training_descriptors: int = 20000
    seed: int = 0


@dataclass(frozen=True)
class BowVector:
    words: np.ndarray      # (W,) int64 sorted word ids
    weights: np.ndarray    # (W,) float64, sum 1

    def __len__(self) -> int:
        return len(self.words)


# --- k-majority clustering --------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _assign(words, centres):
    n, k = words.shape[0], centres.shape[0]
    label = np.empty(n, np.int64)
    dist = np.empty(n, np.int64)
    for i in range(n):
        best, best_d = 0, np.int64(1 << 20)
        for c in range(k):
            d = np.int64(_hamming(words, i, centres, c))
            if d < best_d:
                best, best_d = c, d
        label[i] = best
        dist[i] = best_d
    return label, dist


@njit(cache=True, nogil=True)
def _majority(words, label, k, old):
    """Bitwise majority of each cluster's members (an empty cluster keeps its centre)."""
    counts = np.zeros((k, 256), np.int64)
    sizes = np.zeros(k, np.int64)
    for i in range(words.shape[0]):
        c = label[i]
        sizes[c] += 1
        for w in range(4):
            x = words[i, w]
            for b in range(64):
                if (x >> np.uint64(b)) & np.uint64(1):
                    counts[c, 64 * w + b] += 1
    out = old.copy()
    for c in range(k):
        if sizes[c] == 0:
            continue
        for w in range(4):
            x = np.uint64(0)
            for b in range(64):
                if 2 * counts[c, 64 * w + b] > sizes[c]:
                    x |= np.uint64(1) << np.uint64(b)
            out[c, w] = x
    return out


@njit(cache=True, nogil=True)
def _kmajority_kernel(words, k, iterations, first, uniforms):
    """k-means++ seeding (D^2 sampling with the given uniforms) then k-majority rounds.
    Returns (centres (k', 4), label (N,))."""
    n = words.shape[0]
    centres = np.empty((k, 4), np.uint64)
    centres[0] = words[first]
    nearest = np.empty(n)
    for i in range(n):
        nearest[i] = _hamming(words, i, centres, 0)
    count = 1
    for c in range(1, k):
        total = 0.0
        for i in range(n):
            total += nearest[i] * nearest[i]
        if total <= 0.0:
            break  # every remaining descriptor equals a centre
        target = uniforms[c] * total
        acc = 0.0
        pick = n - 1
        for i in range(n):
            acc += nearest[i] * nearest[i]
            if acc > target:
                pick = i
                break
        centres[count] = words[pick]
        for i in range(n):
            d = _hamming(words, i, centres, count)
            if d < nearest[i]:
                nearest[i] = d
        count += 1
    centres = centres[:count].copy()
    label, _ = _assign(words, centres)
    for _ in range(iterations):
        new = _majority(words, label, count, centres)
        new_label, _ = _assign(words, new)
        same = True
        for i in range(n):
            if new_label[i] != label[i]:
                same = False
                break
        centres, label = new, new_label
        if same:
            break
    return centres, label


def _kmajority(words: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centres (k', 4) uint64, label (N,)) with k-means++ seeding in Hamming space."""
    return _kmajority_kernel(words, k, iterations, int(rng.integers(len(words))), rng.random(k))


# --- the vocabulary -------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _quantize(words, centres, children, word_of_node):
    """Leaf word of every descriptor: from the root, always to the nearest child centre."""
    out = np.empty(words.shape[0], np.int64)
    for i in range(words.shape[0]):
        node = 0
        while children[node, 0] >= 0:
            best, best_d = -1, np.int64(1 << 20)
            for c in range(children.shape[1]):
                child = children[node, c]
                if child < 0:
                    break
                d = np.int64(_hamming(words, i, centres, child))
                if d < best_d:
                    best, best_d = child, d
            node = best
        out[i] = word_of_node[node]
    return out


class Vocabulary:
    """A frozen tree of binary words with IDF weights."""

    def __init__(self, centres: np.ndarray, children: np.ndarray, word_of_node: np.ndarray, idf: np.ndarray):
        self.centres = centres              # (nodes, 4) uint64; row 0 (root) unused
        self.children = children            # (nodes, branching) int64, -1: none
        self.word_of_node = word_of_node    # (nodes,) int64, -1 for inner nodes
        self.idf = idf                      # (words,) float64

    @property
    def num_words(self) -> int:
        return len(self.idf)

    @classmethod
    def train(cls, descriptors_per_image: list, options: BowOptions | None = None) -> "Vocabulary":
        """Hierarchical k-majority over the descriptors of some images (rows of (N_i, 32) uint8); IDF from
        the same images. Deterministic for a given ``options.seed``."""
        o = options or BowOptions()
        rng = np.random.default_rng(o.seed)
        all_words = np.concatenate([descriptor_words(d) for d in descriptors_per_image])
        if len(all_words) == 0:
            raise ValueError("vocabulary: no descriptors to train on")
        if len(all_words) > o.max_training_descriptors:
            all_words = all_words[np.sort(rng.choice(len(all_words), o.max_training_descriptors, replace=False))]
        centres = [np.zeros(4, np.uint64)]
        children = [np.full(o.branching, -1, np.int64)]
        level = [0]
        stack = [(0, np.arange(len(all_words)))]
        while stack:
            node, members = stack.pop()
            if level[node] >= o.depth or len(members) <= o.branching:
                continue
            sub = np.ascontiguousarray(all_words[members])
            cen, label = _kmajority(sub, o.branching, o.iterations, rng)
            for c in range(len(cen)):
                child = len(centres)
                centres.append(cen[c])
                children.append(np.full(o.branching, -1, np.int64))
                level.append(level[node] + 1)
                children[node][c] = child
                stack.append((child, members[label == c]))
        children = np.stack(children)
        is_leaf = children[:, 0] < 0
        is_leaf[0] = len(children) == 1
        word_of_node = np.full(len(children), -1, np.int64)
        word_of_node[is_leaf] = np.arange(int(is_leaf.sum()))
        vocab = cls(np.ascontiguousarray(np.stack(centres)), children, word_of_node, np.ones(int(is_leaf.sum())))
        # IDF: log(N / n_w) over the training images (a word no image has gets the largest weight).
        docs = np.zeros(vocab.num_words)
        for d in descriptors_per_image:
            if len(d):
                docs[np.unique(vocab.words_of(d))] += 1
        vocab.idf = np.log(len(descriptors_per_image) / np.maximum(docs, 1.0)) + 1e-6
        return vocab

    def words_of(self, descriptors) -> np.ndarray:
        """(N,) word id of every (N, 32) uint8 descriptor."""
        w = descriptor_words(descriptors)
        if len(w) == 0:
            return np.zeros(0, np.int64)
        return _quantize(w, self.centres, self.children, self.word_of_node)

    def transform(self, descriptors) -> BowVector:
        """TF-IDF vector of one image's descriptors, L1-normalised."""
        ids = self.words_of(descriptors)
        if len(ids) == 0:
            return BowVector(np.zeros(0, np.int64), np.zeros(0))
        words, counts = np.unique(ids, return_counts=True)
        weights = counts / len(ids) * self.idf[words]
        total = weights.sum()
        return BowVector(words, weights / total if total > 0 else weights)


def bow_score(a: BowVector, b: BowVector) -> float:
    """DBoW2's L1 score: 1 - 0.5 |a - b|_1 for L1-normalised vectors (1: identical, 0: no common word)."""
    _, ia, ib = np.intersect1d(a.words, b.words, assume_unique=True, return_indices=True)
    if len(ia) == 0:
        return 0.0
    va, vb = a.weights[ia], b.weights[ib]
    return float(0.5 * np.sum(np.abs(va) + np.abs(vb) - np.abs(va - vb)))


# --- database ---------------------------------------------------------------------------------------

class KeyframeDatabase:
    """Inverted index word -> keyframes, over the keyframes' BoW vectors."""

    def __init__(self, num_words: int):
        self._inverted: list[list[int]] = [[] for _ in range(num_words)]
        self.vectors: dict[int, BowVector] = {}

    def add(self, keyframe: int, vector: BowVector) -> None:
        self.vectors[keyframe] = vector
        for w in vector.words:
            self._inverted[w].append(keyframe)

    def common_words(self, vector: BowVector) -> tuple[np.ndarray, np.ndarray]:
        """(keyframes sharing at least one word with ``vector``, how many words each shares), by keyframe."""
        lists = [self._inverted[w] for w in vector.words if self._inverted[w]]
        if not lists:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        kfs, counts = np.unique(np.concatenate([np.asarray(x, np.int64) for x in lists]), return_counts=True)
        return kfs, counts

    def score(self, a: int, b: int) -> float:
        return bow_score(self.vectors[a], self.vectors[b])


class PlaceRecognizer:
    """Trains the vocabulary once enough keyframes were seen, then indexes every keyframe."""

    def __init__(self, options: BowOptions | None = None):
        self.options = options or BowOptions()
        self.vocabulary: Vocabulary | None = None
        self.database: KeyframeDatabase | None = None
        self._descriptors: list[tuple[int, np.ndarray]] = []
        self._trained_on = 0          # keyframes the current vocabulary was trained on
        self._frozen = False

    @property
    def ready(self) -> bool:
        return self.vocabulary is not None

    def add_keyframe(self, keyframe: int, descriptors: np.ndarray) -> bool:
        """Index a keyframe. Returns True when this call (re)trained the vocabulary."""
        self._descriptors.append((keyframe, descriptors))
        o = self.options
        n = len(self._descriptors)
        due = (n >= max(o.min_training_keyframes, 2 * self._trained_on) and not self._frozen
               and sum(len(d) for _, d in self._descriptors) >= o.min_training_descriptors)
        if not due:
            if self.ready:
                self.database.add(keyframe, self.vocabulary.transform(descriptors))
            return False
        self.vocabulary = Vocabulary.train([d for _, d in self._descriptors], o)
        self.database = KeyframeDatabase(self.vocabulary.num_words)
        for k, d in self._descriptors:
            self.database.add(k, self.vocabulary.transform(d))
        self._trained_on = n
        self._frozen = sum(len(d) for _, d in self._descriptors) >= o.max_training_descriptors
        return True

    def vector(self, keyframe: int) -> BowVector | None:
        return self.database.vectors.get(keyframe) if self.ready else None

    def score(self, a: int, b: int) -> float:
        return self.database.score(a, b)

    def transform(self, descriptors) -> BowVector | None:
        return self.vocabulary.transform(descriptors) if self.ready else None
