"""Text classification of citizen posts into categories.

:class:`TextClassifier` is a linear SVM over three blocks of features, helped by the nearest training posts
and calibrated by temperature scaling:

* character 1–2-grams of the whole post, TF-IDF with sublinear tf (no word segmentation: jieba is not used);
* character 1–3-grams of the first ``head_chars`` characters, where the title sits, at ``head_weight`` (the
  shipped default model: the first 30 at the body's weight; the Teddy recipe: the first 30 at half);
* how often each taxonomy category's keywords occur (``log1p`` of the count), so the hand-written rules
  inform the model where the training data is thin.

With ``nb_smoothing`` > 0 each one-vs-rest SVM sees the features scaled by their naive-Bayes log-count ratio
for its category (NBSVM, Wang & Manning 2012): an n-gram common in one category's posts and rare elsewhere starts
out stronger. The ratios fold into the weights, so it costs nothing at prediction time (the shipped default
model and the Teddy recipe use 0.1; the README has the figures).

To the SVM's margins it adds ``neighbour_weight`` × the votes of the ``neighbours`` most similar training posts
(cosine over the same features, each vote weighing similarity ** ``neighbour_power``, the votes summing to 1).
Citizens write about the same estate, employer or school again and again; a close neighbour catches such a
post where the SVM's single hyperplane per category misses it (cross-validated macro-F1 on the Teddy 2020
corpus 0.9108 with the 5 nearest voting in proportion to similarity, 0.9056 with the 10 nearest at similarity
** 4, 0.8961 without; the README has the figures). The shipped default model does without
(``neighbours=0``): its training posts are templates and hand-written posts, not a city's past cases, and
their neighbours did not help it on the Teddy dev set (0.7667 against 0.7731).

N-grams are never built as Python strings at prediction time: the texts become one array of code points,
every n-gram a 64-bit polynomial hash computed with numpy, looked up in a numpy hash table of the training
vocabulary. That is what makes thousands of posts per second possible on one core; the vocabulary keeps the
n-gram strings only to explain a decision (``top_features``).

:class:`KeywordClassifier` is the rules alone: the category whose keywords occur most. It is the baseline the
trained model must beat, and a fallback when no model is available.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

MODEL_FILE = "model.joblib"
META_FILE = "model.json"
FORMAT_VERSION = 2
NEIGHBOUR_CHUNK = 1000  # rows whose similarities to every training post are held at once
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for the polynomial n-gram hash
_DROPPED = np.array([ord(c) for c in " \t\r\n\f\v\u3000\xa0\u200b\ufeff"], dtype=np.uint32)

KeywordsByCategory = Mapping[str, Sequence[str]]
_Triplet = tuple[np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------------------
# texts as code points, n-grams as 64-bit hashes
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Corpus:
    """Normalised texts as one array of code points: full-width ASCII folded to half-width, A–Z lowered,
    whitespace dropped (Chinese needs no spaces, and the evaluation corpus joins title and body without one).
    This is the part of NFKC that matters here, done in numpy because ``unicodedata.normalize`` alone costs
    more than classifying."""

    codes: np.ndarray  # uint64
    doc_of: np.ndarray  # int64: the document of each position
    remaining: np.ndarray  # int64: characters left in the document from each position, itself included
    offset: np.ndarray  # int64: position within the document
    n_docs: int

    @classmethod
    def of(cls, texts: Sequence[str]) -> _Corpus:
        codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        codes = np.where((codes >= 0xFF01) & (codes <= 0xFF5E), codes - 0xFEE0, codes)
        codes = np.where((codes >= 0x41) & (codes <= 0x5A), codes + 32, codes)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        doc_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        keep = ~np.isin(codes, _DROPPED)
        codes, doc_of = codes[keep].astype(np.uint64), doc_of[keep]
        bounds = np.searchsorted(doc_of, np.arange(len(texts) + 1))
        positions = np.arange(len(codes), dtype=np.int64)
        return cls(codes, doc_of, bounds[doc_of + 1] - positions, positions - bounds[doc_of], len(texts))

    def text(self, start: int, n: int) -> str:
        return "".join(map(chr, self.codes[start : start + n].tolist()))

    def windows(self, max_n: int) -> _Windows:
        return _Windows.of(self, max_n)


@dataclass(frozen=True)
class _Windows:
    """Hashes of the n-character windows of a corpus for n = 1..max_n, each computed once and shared by the
    feature blocks. A window never spans two documents."""

    corpus: _Corpus
    hashes: dict[int, np.ndarray]  # n -> hash of the window starting at each position (where one fits)

    @classmethod
    def of(cls, corpus: _Corpus, max_n: int) -> _Windows:
        hashes, running = {}, np.zeros(len(corpus.codes), dtype=np.uint64)
        for n in range(1, max_n + 1):
            count = max(len(corpus.codes) - n + 1, 0)
            running = running[:count] * _MULTIPLIER + corpus.codes[n - 1 : n - 1 + count] + np.uint64(1)
            hashes[n] = (running * _MULTIPLIER + np.uint64(n)) | np.uint64(1)  # never 0: 0 marks a free slot
        return cls(corpus, hashes)

    def select(self, ns: Sequence[int], max_chars: int | None = None) -> _Triplet:
        """(hash, document, start) of every window of the given lengths, optionally only those lying within
        the first ``max_chars`` characters of their document."""
        parts = []
        for n in ns:
            count = len(self.hashes[n])
            inside = self.corpus.remaining[:count] >= n
            if max_chars is not None:
                inside &= self.corpus.offset[:count] + n <= max_chars
            starts = np.flatnonzero(inside)
            parts.append((self.hashes[n][starts], self.corpus.doc_of[starts], starts))
        if not parts:
            return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def normalize_text(text: str) -> str:
    """The text exactly as the features see it."""
    corpus = _Corpus.of([text])
    return corpus.text(0, len(corpus.codes))


def hash_string(text: str) -> np.uint64:
    """The hash a window with exactly this normalised text gets."""
    corpus = _Corpus.of([text])
    if not len(corpus.codes):
        raise ValueError("cannot hash an empty string")
    return corpus.windows(len(corpus.codes)).hashes[len(corpus.codes)][0]


class _KeyTable:
    """Lookup of 64-bit keys to their index for many keys at once, with a constant number of numpy calls:
    a table with 4× as many slots as keys, addressed by the key's top bits, holds the first key of each
    slot; the keys that collided sit in a sorted overflow array searched only for lookups whose slot
    overflowed. Faster than a binary search for every n-gram of a batch, and with no per-key Python."""

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.uint64)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("duplicate keys")
        bits = max(4, int(np.ceil(np.log2(max(len(keys), 1) * 4))))
        self.shift = np.uint64(64 - bits)
        self.slots = np.zeros(1 << bits, dtype=np.uint64)  # 0 = free: hashes are odd
        self.values = np.full(1 << bits, -1, dtype=np.int64)
        home = (keys >> self.shift).astype(np.int64)
        taken, first = np.unique(home, return_index=True)
        self.slots[taken], self.values[taken] = keys[first], first
        rest = np.setdiff1d(np.arange(len(keys)), first, assume_unique=True)
        self.overflowed = np.zeros(1 << bits, dtype=bool)
        self.overflowed[home[rest]] = True
        order = np.argsort(keys[rest])
        self.overflow_keys, self.overflow_values = keys[rest][order], rest[order]

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The index of each key, -1 where absent."""
        home = (keys >> self.shift).astype(np.int64)
        found = np.where(self.slots[home] == keys, self.values[home], -1)
        check = np.flatnonzero((found < 0) & self.overflowed[home])
        if len(check):
            positions = np.searchsorted(self.overflow_keys, keys[check])
            positions = np.minimum(positions, len(self.overflow_keys) - 1)
            hit = self.overflow_keys[positions] == keys[check]
            found[check[hit]] = self.overflow_values[positions[hit]]
        return found


def _counts(docs: np.ndarray, columns: np.ndarray, n_columns: int) -> _Triplet:
    """(document, column, count) of the distinct pairs, sorted by document."""
    pairs, counts = np.unique(docs * max(n_columns, 1) + columns, return_counts=True)
    rows, columns = np.divmod(pairs, max(n_columns, 1))
    return rows, columns, counts.astype(np.float64)


@dataclass
class NgramVocabulary:
    """Character n-grams seen in at least ``min_df`` training texts, with their IDF as scikit-learn's
    ``TfidfVectorizer(smooth_idf=True)`` computes it; ``max_chars`` limits the block to the start of texts.
    The hash table is rebuilt from ``keys`` when loaded rather than stored."""

    ngram_range: tuple[int, int]
    max_chars: int | None
    grams: list[str]
    keys: np.ndarray
    idf: np.ndarray
    table: _KeyTable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.table = _KeyTable(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "table"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def ns(self) -> range:
        return range(self.ngram_range[0], self.ngram_range[1] + 1)

    @classmethod
    def fit(cls, windows: _Windows, ngram_range: tuple[int, int], min_df: int,
            max_chars: int | None = None) -> NgramVocabulary:
        key_parts, df_parts, grams = [], [], []
        for n in range(ngram_range[0], ngram_range[1] + 1):
            hashes, docs, starts = windows.select([n], max_chars)
            _, first_in_doc = np.unique(np.stack([hashes, docs.astype(np.uint64)]), axis=1, return_index=True)
            keys, first, df = np.unique(hashes[first_in_doc], return_index=True, return_counts=True)
            keep = df >= min_df
            key_parts.append(keys[keep])
            df_parts.append(df[keep])
            grams += [windows.corpus.text(int(s), n) for s in starts[first_in_doc[first[keep]]]]
        df = np.concatenate(df_parts)
        idf = np.log((1 + windows.corpus.n_docs) / (1 + df)) + 1.0
        return cls(ngram_range, max_chars, grams, np.concatenate(key_parts), idf)

    def __len__(self) -> int:
        return len(self.grams)

    def transform(self, windows: _Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, value) of the sublinear TF-IDF, rows L2-normalised, sorted by row."""
        hashes, docs, _ = windows.select(self.ns, self.max_chars)
        columns = self.table.find(hashes)
        known = columns >= 0
        rows, columns, counts = _counts(docs[known], columns[known], len(self))
        values = (1.0 + np.log(counts)) * self.idf[columns]
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=windows.corpus.n_docs))
        return rows, columns, values / norms[rows]


@dataclass
class KeywordIndex:
    """The taxonomy's keywords, hashed, each with the category it signals. Matching first looks up the first
    ``prefix`` characters at every position in a small table of keyword beginnings, and only where one
    begins looks for whole keywords: most positions of a text begin no keyword."""

    categories: list[str]
    keywords: list[str]
    category_of_keyword: np.ndarray
    keys: np.ndarray
    table: _KeyTable = field(init=False, repr=False)
    prefix_table: _KeyTable = field(init=False, repr=False)
    lengths: list[int] = field(init=False, repr=False)
    prefix: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lengths = sorted({len(k) for k in self.keywords})
        self.prefix = min([2, *self.lengths])
        self.table = _KeyTable(self.keys)
        self.prefix_table = _KeyTable(np.unique([hash_string(k[: self.prefix]) for k in self.keywords]))

    __getstate__ = NgramVocabulary.__getstate__
    __setstate__ = NgramVocabulary.__setstate__

    @classmethod
    def build(cls, keywords_by_category: KeywordsByCategory) -> KeywordIndex:
        categories = list(keywords_by_category)
        pairs = sorted({(normalize_text(k), c) for c, terms in keywords_by_category.items() for k in terms})
        pairs = [(k, c) for k, c in pairs if k]
        keywords = [k for k, _ in pairs]
        shared = sorted({k for k in keywords if keywords.count(k) > 1})
        if shared:
            raise ValueError(f"keywords listed under more than one category: {', '.join(shared)}")
        category_of = np.array([categories.index(c) for _, c in pairs], dtype=np.int64)
        return cls(categories, keywords, category_of, np.array([hash_string(k) for k in keywords], np.uint64))

    @property
    def max_length(self) -> int:
        return max(self.lengths, default=1)

    def matches(self, windows: _Windows) -> tuple[np.ndarray, np.ndarray]:
        """(document, keyword index) of every keyword occurrence, overlaps included."""
        if not self.keywords:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        begins = np.flatnonzero(self.prefix_table.find(windows.hashes[self.prefix]) >= 0)
        start_parts, hash_parts = [], []
        for n in self.lengths:
            starts = begins[begins < len(windows.hashes[n])]
            starts = starts[windows.corpus.remaining[starts] >= n]
            start_parts.append(starts)
            hash_parts.append(windows.hashes[n][starts])
        starts, found = np.concatenate(start_parts), self.table.find(np.concatenate(hash_parts))
        return windows.corpus.doc_of[starts[found >= 0]], found[found >= 0]

    def category_counts(self, docs: np.ndarray, keywords: np.ndarray) -> _Triplet:
        """(row, category, count) of keyword occurrences, from :meth:`matches`."""
        return _counts(docs, self.category_of_keyword[keywords], len(self.categories))

    def hits_by_document(self, docs: np.ndarray, keywords: np.ndarray,
                         n_docs: int) -> list[dict[str, list[str]]]:
        """For each document: category → the distinct keywords found."""
        found: list[dict[str, list[str]]] = [{} for _ in range(n_docs)]
        for doc, keyword in zip(docs.tolist(), keywords.tolist(), strict=True):
            category = self.categories[self.category_of_keyword[keyword]]
            terms = found[doc].setdefault(category, [])
            if self.keywords[keyword] not in terms:
                terms.append(self.keywords[keyword])
        return found


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    top_features: list[str]  # the n-grams that pushed most towards ``category``
    alternatives: list[tuple[str, float]]  # the next most likely categories with their probabilities
    keywords: list[str] = field(default_factory=list)  # taxonomy keywords of ``category`` found in the text


def _alternatives(labels: Sequence[str], probabilities: np.ndarray, best: int,
                  count: int = 3) -> list[tuple[str, float]]:
    order = [i for i in np.argsort(-probabilities, kind="stable")[: count + 1].tolist() if i != best][:count]
    return [(labels[i], round(float(probabilities[i]), 4)) for i in order]


def _readable(grams: Sequence[str], limit: int) -> list[str]:
    """Drop n-grams overlapping a stronger one already listed, and single characters unless nothing else."""
    chosen: list[str] = []
    for gram in grams:
        if len(gram) > 1 and not any(gram in other or other in gram for other in chosen):
            chosen.append(gram)
    return (chosen or list(grams))[:limit]


# ---------------------------------------------------------------------------------------------------------
# keyword rules alone
# ---------------------------------------------------------------------------------------------------------


class KeywordClassifier:
    """The category whose keywords occur most often (longer keywords count more: they are more specific).
    With no keyword at all the confidence is 0 and the category the first of the taxonomy."""

    def __init__(self, keywords_by_category: KeywordsByCategory, version: str = "unversioned") -> None:
        self.index = KeywordIndex.build(keywords_by_category)
        self.labels = list(self.index.categories)
        self.model_version = f"keywords-{version}"
        self._weights = np.array([len(k) for k in self.index.keywords], dtype=float)

    @classmethod
    def from_taxonomy(cls, taxonomy: Any) -> KeywordClassifier:
        return cls(taxonomy.keywords_by_category(), taxonomy.version)

    def classify_batch(self, texts: Sequence[str]) -> list[Classification]:
        windows = _Corpus.of(texts).windows(self.index.max_length)
        docs, keywords = self.index.matches(windows)
        scores = np.zeros((len(texts), len(self.labels)))
        np.add.at(scores, (docs, self.index.category_of_keyword[keywords]), self._weights[keywords])
        hits = self.index.hits_by_document(docs, keywords, len(texts))
        results = []
        for row, found in zip(scores, hits, strict=True):
            total = row.sum()
            shares = row / total if total else row
            best = int(np.argmax(row))
            words = found.get(self.labels[best], [])
            results.append(Classification(self.labels[best], round(float(shares[best]), 4), list(words),
                                          _alternatives(self.labels, shares, best), list(words)))
        return results

    def classify(self, text: str) -> Classification:
        return self.classify_batch([text])[0]

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [c.category for c in self.classify_batch(texts)]


# ---------------------------------------------------------------------------------------------------------
# the trained model
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingParams:
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = 2
    head_chars: int = 30
    head_ngram_range: tuple[int, int] = (1, 3)
    head_weight: float = 0.5
    keyword_weight: float = 0.1
    c: float = 1.0
    neighbours: int = 5  # 0: the SVM alone
    neighbour_weight: float = 0.6
    neighbour_power: float = 1.0
    neighbour_max_df: float = 0.4  # n-grams in a larger share of training posts are left out of the similarity
    calibration_folds: int = 3
    seed: int = 0
    nb_smoothing: float = 0.0  # > 0: NBSVM (features scaled by their naive-Bayes ratio per label), this smoothing


@dataclass(frozen=True)
class _Batch:
    """Features of a batch of texts, with the keyword hits they were built from."""

    matrix: sp.csr_matrix
    keyword_hits: list[dict[str, list[str]]]


@dataclass
class _Blocks:
    """The three feature blocks and how to put them side by side."""

    body: NgramVocabulary
    head: NgramVocabulary
    keywords: KeywordIndex
    params: TrainingParams

    @property
    def width(self) -> int:
        return len(self.body) + len(self.head) + len(self.keywords.categories)

    @property
    def longest_window(self) -> int:
        return max(self.params.ngram_range[1], self.params.head_ngram_range[1], self.keywords.max_length)

    def features(self, texts: Sequence[str]) -> _Batch:
        corpus = _Corpus.of(texts)
        windows = corpus.windows(self.longest_window)
        docs, matched = self.keywords.matches(windows)
        head_rows, head_columns, head_values = self.head.transform(windows)
        keyword_rows, categories, counts = self.keywords.category_counts(docs, matched)
        keyword_offset = len(self.body) + len(self.head)
        blocks = [  # (row, column, value), each block's columns after the previous block's
            self.body.transform(windows),
            (head_rows, head_columns + len(self.body), head_values * self.params.head_weight),
            (keyword_rows, categories + keyword_offset, np.log1p(counts) * self.params.keyword_weight),
        ]
        matrix = _csr_from_triplets(blocks, corpus.n_docs, self.width)
        return _Batch(matrix, self.keywords.hits_by_document(docs, matched, corpus.n_docs))

    def name(self, column: int) -> str:
        if column < len(self.body):
            return self.body.grams[column]
        column -= len(self.body)
        if column < len(self.head):
            return self.head.grams[column]
        return f"<关键词:{self.keywords.categories[column - len(self.head)]}>"


def _csr_from_triplets(blocks: Sequence[_Triplet], n_rows: int, n_columns: int) -> sp.csr_matrix:
    """One float32 CSR matrix from blocks of (row, column, value), none repeating a cell."""
    rows, columns, values = (np.concatenate(part) for part in zip(*blocks, strict=True))
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    matrix = (values[order].astype(np.float32), columns[order], indptr)
    return sp.csr_matrix(matrix, shape=(n_rows, n_columns))


@dataclass
class TextClassifier:
    labels: list[str]
    blocks: _Blocks
    weights: np.ndarray  # (features × decision columns), float32; one column when there are two labels
    intercept: np.ndarray
    inverse_temperature: float
    memory: _Memory
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> TrainingParams:
        return self.blocks.params

    @property
    def model_version(self) -> str:
        return str(self.info.get("model_version", "untrained"))

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.blocks.features(texts).matrix

    # -- prediction ----------------------------------------------------------------------------------------

    def _probabilities(self, matrix: sp.csr_matrix) -> np.ndarray:
        scores = _scores(matrix, self.weights, self.intercept, self.memory, self.params)
        return _softmax(scores * self.inverse_temperature)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._probabilities(self.features(texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in np.argmax(self.predict_proba(texts), axis=1)]

    def classify_batch(self, texts: Sequence[str], explain: int = 5) -> list[Classification]:
        batch = self.blocks.features(texts)
        probabilities = self._probabilities(batch.matrix)
        best = np.argmax(probabilities, axis=1)
        explanations = self._explain(batch.matrix, best, explain)
        return [Classification(self.labels[k], round(float(p[k]), 4), why, _alternatives(self.labels, p, k),
                               hits.get(self.labels[k], []))
                for k, p, why, hits in zip(best.tolist(), probabilities, explanations, batch.keyword_hits,
                                           strict=True)]

    def classify(self, text: str) -> Classification:
        return self.classify_batch([text])[0]

    def _explain(self, matrix: sp.csr_matrix, labels: np.ndarray, limit: int) -> list[list[str]]:
        """Per row, the n-grams whose weight × value pushed most towards the row's label."""
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        if len(self.labels) == 2:
            contributions = matrix.data * self.weights[matrix.indices, 0] * np.where(labels[rows] == 1, 1, -1)
        else:
            contributions = matrix.data * self.weights[matrix.indices, labels[rows]]
        contributions[matrix.indices >= len(self.blocks.body) + len(self.blocks.head)] = 0  # see .keywords
        candidates = limit * 3
        explanations = []
        for start, end in zip(matrix.indptr[:-1].tolist(), matrix.indptr[1:].tolist(), strict=True):
            row = contributions[start:end]
            top = np.arange(len(row))
            if len(row) > candidates:
                top = np.argpartition(-row, candidates)[:candidates]
            top = top[np.argsort(-row[top])]
            grams = [self.blocks.name(int(matrix.indices[start + i])) for i in top.tolist() if row[i] > 0]
            explanations.append(_readable(grams, limit))
        return explanations

    # -- training ------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], keywords_by_category: KeywordsByCategory,
              params: TrainingParams = TrainingParams(), sample_weight: Sequence[float] | None = None,
              taxonomy_version: str = "unversioned") -> TextClassifier:
        if len(texts) != len(labels) or not texts:
            raise ValueError("need as many labels as texts, and at least one text")
        keywords = KeywordIndex.build(keywords_by_category)
        windows = _Corpus.of(texts).windows(max(params.ngram_range[1], params.head_ngram_range[1]))
        body = NgramVocabulary.fit(windows, params.ngram_range, params.min_df)
        head = NgramVocabulary.fit(windows, params.head_ngram_range, params.min_df, params.head_chars)
        blocks = _Blocks(body, head, keywords, params)
        matrix = blocks.features(texts).matrix
        y = np.asarray(labels)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        classes, y_index = np.unique(y, return_inverse=True)
        coef, intercept, beta = _fit(matrix, y_index, weights, params)
        kept = slice(None) if params.neighbours else slice(0)
        memory = _Memory.of(matrix[kept], y_index[kept], params.neighbour_max_df)
        created = datetime.now(UTC).replace(microsecond=0)
        fingerprint = json.dumps([list(texts), list(labels), asdict(params), keywords.keywords,
                                  None if weights is None else weights.tolist()], ensure_ascii=False)
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()
        info = {
            "format": FORMAT_VERSION,
            "model_version": f"charsvm-{created:%Y%m%d}-{digest[:10]}",
            "created_at": created.isoformat(),
            "labels": [str(c) for c in classes],
            "training_size": len(texts),
            "label_counts": {c: int((y == c).sum()) for c in classes},
            "taxonomy_version": taxonomy_version,
            "params": asdict(params),
            "n_features": blocks.width,
            "inverse_temperature": round(beta, 4),
            "metrics": {},
        }
        return cls([str(c) for c in classes], blocks, coef, intercept, beta, memory, info)

    # -- persistence ---------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"labels": self.labels, "body": self.blocks.body, "head": self.blocks.head,
                "keywords": self.blocks.keywords, "weights": self.weights, "intercept": self.intercept,
                "inverse_temperature": self.inverse_temperature, "memory": self.memory}

    def save(self, directory: Path, metrics: Mapping[str, Any] | None = None) -> None:
        """``model.joblib`` (arrays and vocabularies) and ``model.json`` (what a person or the service needs
        to know about the model without loading it)."""
        directory.mkdir(parents=True, exist_ok=True)
        if metrics:
            self.info["metrics"] = dict(metrics)
        joblib.dump(self._state(), directory / MODEL_FILE, compress=3)
        (directory / META_FILE).write_text(json.dumps(self.info, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")

    def to_bytes(self) -> bytes:
        """The ``model.joblib`` content, for a model kept in a database (``info`` travels beside it)."""
        buffer = io.BytesIO()
        joblib.dump(self._state(), buffer, compress=3)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, info: Mapping[str, Any], blob: bytes) -> TextClassifier:
        return cls._restore(dict(info), joblib.load(io.BytesIO(blob)), "a stored model")

    @classmethod
    def load(cls, directory: Path) -> TextClassifier:
        info = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        cls._check_format(info, str(directory / META_FILE))
        return cls._restore(info, joblib.load(directory / MODEL_FILE), str(directory))

    @staticmethod
    def _check_format(info: Mapping[str, Any], where: str) -> None:
        if info.get("format") != FORMAT_VERSION:
            raise ValueError(f"{where}: model format {info.get('format')!r}, "
                             f"this code reads {FORMAT_VERSION}; retrain the model")

    @classmethod
    def _restore(cls, info: dict[str, Any], state: dict[str, Any], where: str) -> TextClassifier:
        cls._check_format(info, where)
        # a training setting this code does not know is left out: prediction needs only the arrays
        known = {f.name for f in fields(TrainingParams)}
        params = TrainingParams(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in info["params"].items() if k in known})
        blocks = _Blocks(state.pop("body"), state.pop("head"), state.pop("keywords"), params)
        return cls(blocks=blocks, info=info, **state)


def load_model(directory: Path) -> TextClassifier:
    return TextClassifier.load(directory)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _unit_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = sp.diags((1.0 / np.maximum(norms, 1e-12)).astype(np.float32))
    return sp.csr_matrix(scale @ matrix, dtype=np.float32)


@dataclass(frozen=True)
class _Memory:
    """The training posts, for the neighbour search: their L2-normalised features (features × posts, float32
    like the rows they meet) and their label indexes. Features found in more than ``max_df`` of the posts
    (the commonest characters) are zeroed: they tell posts apart least and cost most of the sparse product."""

    matrix: sp.csr_matrix
    labels: np.ndarray

    @classmethod
    def of(cls, matrix: sp.csr_matrix, labels: np.ndarray, max_df: float) -> _Memory:
        memory = _unit_rows(matrix).T.tocsr()
        common = np.diff(memory.indptr) > max_df * memory.shape[1]
        memory = sp.csr_matrix(sp.diags((~common).astype(np.float32)) @ memory, dtype=np.float32)
        memory.eliminate_zeros()
        return cls(memory, np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.matrix.shape[1]

    def votes(self, matrix: sp.csr_matrix, n_labels: int, params: TrainingParams) -> np.ndarray:
        """Per row, the similarity-weighted label votes of its ``params.neighbours`` nearest training posts,
        summing to 1 (all 0 for a text sharing no feature with any training post)."""
        k = min(params.neighbours, len(self))
        votes = np.zeros((matrix.shape[0], n_labels))
        for start in range(0, matrix.shape[0], NEIGHBOUR_CHUNK):
            similarity = (_unit_rows(matrix[start : start + NEIGHBOUR_CHUNK]) @ self.matrix).toarray()
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            weight = np.take_along_axis(similarity, nearest, axis=1) ** params.neighbour_power
            rows = np.repeat(np.arange(start, start + len(similarity)), k)
            np.add.at(votes, (rows, self.labels[nearest].ravel()), weight.ravel())
        total = votes.sum(axis=1, keepdims=True)
        return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def _scores(matrix: sp.csr_matrix, coef: np.ndarray, intercept: np.ndarray, memory: _Memory,
            params: TrainingParams) -> np.ndarray:
    """SVM margins (one column per label) plus the weighted votes of the nearest training posts."""
    scores = np.asarray(matrix @ coef) + intercept
    if scores.shape[1] == 1:
        scores = np.hstack([-scores, scores])
    if params.neighbours and len(memory):
        scores = scores + params.neighbour_weight * memory.votes(matrix, scores.shape[1], params)
    return scores


def _fit(matrix: sp.csr_matrix, y: np.ndarray, sample_weight: np.ndarray | None,
         params: TrainingParams) -> tuple[np.ndarray, np.ndarray, float]:
    """A LinearSVC on all the data (``y``: label indexes), and an inverse temperature β fitted on
    cross-validated scores (margins plus neighbour votes, each held-out post's neighbours taken from the
    other folds): probabilities = softmax(β · scores)."""
    counts = np.bincount(y)
    if len(counts) < 2:
        raise ValueError("need at least two labels to train")

    def linear(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights = None if sample_weight is None else sample_weight[rows]
        if params.nb_smoothing and len(counts) > 2:  # two labels: one decision column, the plain SVM
            return _nb_svm(matrix[rows], y[rows], weights, len(counts), params)
        svm = LinearSVC(C=params.c, class_weight="balanced", random_state=params.seed)
        svm.fit(matrix[rows], y[rows], sample_weight=weights)
        return np.asarray(svm.coef_, dtype=np.float32).T.copy(), np.asarray(svm.intercept_, dtype=np.float32)

    folds = min(params.calibration_folds, int(counts.min()))
    beta = 1.0  # too few examples of some label to calibrate: raw scores
    if folds >= 2:
        scores = np.zeros((len(y), len(counts)))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=params.seed).split(matrix, y):
            memory = _Memory.of(matrix[train], y[train], params.neighbour_max_df)
            scores[test] = _scores(matrix[test], *linear(train), memory, params)
        beta = _temperature(scores, y, sample_weight)
    return (*linear(np.arange(len(y))), beta)


def _nb_svm(matrix: sp.csr_matrix, y: np.ndarray, sample_weight: np.ndarray | None, n_labels: int,
            params: TrainingParams) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest SVMs over features scaled by their naive-Bayes log-count ratio for the label (Wang & Manning's
    NBSVM): an n-gram frequent in one label's posts and rare elsewhere starts with more weight. The ratio folds
    into the weights, so predicting costs what the plain SVM costs."""
    weights = np.ones(len(y)) if sample_weight is None else sample_weight
    balanced = len(y) / (n_labels * np.maximum(np.bincount(y, minlength=n_labels), 1))
    coef = np.zeros((matrix.shape[1], n_labels), dtype=np.float32)
    intercept = np.zeros(n_labels, dtype=np.float32)
    for label in range(n_labels):
        inside = y == label
        present = np.asarray(matrix.T @ (weights * inside)).ravel() + params.nb_smoothing
        absent = np.asarray(matrix.T @ (weights * ~inside)).ravel() + params.nb_smoothing
        ratio = np.log(present / present.sum()) - np.log(absent / absent.sum())
        svm = LinearSVC(C=params.c, class_weight={True: balanced[label], False: 1.0}, random_state=params.seed)
        svm.fit(matrix @ sp.diags(ratio), inside, sample_weight=sample_weight)
        coef[:, label] = ratio * svm.coef_[0]
        intercept[label] = svm.intercept_[0]
    return coef, intercept


def _temperature(scores: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> float:
    """The β minimising the (weighted) log loss of softmax(β · scores)."""
    def loss(log_beta: float) -> float:
        shifted = scores * np.exp(log_beta)
        shifted -= shifted.max(axis=1, keepdims=True)
        log_p = shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(axis=1))
        return -float(np.average(log_p, weights=sample_weight))
    return float(np.exp(minimize_scalar(loss, bounds=(-5.0, 8.0), method="bounded").x))


# ---------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------


def scores_for(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Macro-F1 over the labels that occur in ``gold``: predicting a label outside that set is an error that
    lowers recall, but adds no class of its own."""
    labels = sorted(set(gold))
    per_label = f1_score(gold, predicted, labels=labels, average=None, zero_division=0)
    recall = recall_score(gold, predicted, labels=labels, average=None, zero_division=0)
    return {
        "macro_f1": round(float(np.mean(per_label)), 4),
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "per_label_f1": {label: round(float(v), 4) for label, v in zip(labels, per_label, strict=True)},
        "per_label_recall": {label: round(float(v), 4) for label, v in zip(labels, recall, strict=True)},
        "n": len(gold),
    }


def timed_predictions(classifier: TextClassifier | KeywordClassifier,
                      texts: Sequence[str]) -> tuple[list[str], dict[str, float]]:
    """Full classifications (explanations included) of all texts in one batch, and the speed: posts per
    second of wall-clock time, and per second of this process's CPU time (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = classifier.classify_batch(texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    speed = {"posts_per_second": round(len(texts) / max(wall, 1e-9), 1),
             "posts_per_cpu_second": round(len(texts) / max(cpu, 1e-9), 1)}
    return [r.category for r in results], speed


def cross_validate(texts: Sequence[str], labels: Sequence[str], keywords_by_category: KeywordsByCategory,
                   params: TrainingParams = TrainingParams(), folds: int = 5) -> dict[str, Any]:
    """Stratified k-fold (shuffled, seeded by ``params.seed``): scores of the out-of-fold predictions."""
    texts_array, y = np.asarray(texts, dtype=object), np.asarray(labels)
    predicted = np.empty(len(y), dtype=object)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    for train, test in splitter.split(texts_array, y):
        model = TextClassifier.train(list(texts_array[train]), list(y[train]), keywords_by_category, params)
        predicted[test] = model.predict(list(texts_array[test]))
    return {**scores_for(list(y), list(predicted)), "folds": folds}
