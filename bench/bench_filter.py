"""Word filter figures: build time, find() per 2,000-character message, the streaming guard.

    .venv/bin/python bench/bench_filter.py [--words 10000] [--rounds 2000]

Words and texts are generated from a fixed seed, so two runs measure the same work.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from mpchat.safety.normalize import default_normalizer
from mpchat.safety.output_guard import OutputGuard
from mpchat.safety.wordfilter import WordFilter

MESSAGE = 2000
PIECE = 20
# Common CJK characters, so generated words share characters with generated text.
COMMON = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
FILLER = "，。 abc的了是在我有他这中"


def words(rng: random.Random, count: int) -> list[str]:
    result: set[str] = set()
    while len(result) < count:
        result.add("".join(rng.choices(COMMON, k=rng.randint(2, 6))))
    return sorted(result)


def text(rng: random.Random, planted: list[str]) -> str:
    chars = rng.choices(COMMON + list(FILLER) * 40, k=MESSAGE)
    for word in planted:
        at = rng.randrange(0, MESSAGE - len(word))
        chars[at : at + len(word)] = word
    return "".join(chars)[:MESSAGE]


def clean_text(rng: random.Random, wf: WordFilter) -> str:
    # Random CJK over a 10,000-word list hits by chance now and then; keep drawing.
    while True:
        candidate = text(rng, [])
        if not wf.find(candidate):
            return candidate


def timings(fn: Callable[[], object], rounds: int) -> list[float]:
    result = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        result.append(time.perf_counter() - start)
    return result


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if q < 100 else max(samples)


def stream(wf: WordFilter, answer: str) -> None:
    guard = OutputGuard(wf)
    for i in range(0, len(answer), PIECE):
        guard.feed(answer[i : i + PIECE])
    guard.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--words", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(20240501)

    start = time.perf_counter()
    default_normalizer()
    table_build = time.perf_counter() - start
    listed = words(rng, args.words)
    start = time.perf_counter()
    wf = WordFilter.from_words(listed)
    build = time.perf_counter() - start

    clean = clean_text(rng, wf)
    dirty = text(rng, rng.sample(listed, 5))
    assert wf.find(dirty), "planted words must hit"
    from opencc import OpenCC  # for comparison only: what per-call conversion would cost

    t2s = OpenCC("t2s")
    rows: list[tuple[str, list[float], int]] = [
        ("find, clean", timings(lambda: wf.find(clean), args.rounds), MESSAGE),
        ("find, 5 hits", timings(lambda: wf.find(dirty), args.rounds), MESSAGE),
        ("first, 5 hits", timings(lambda: wf.first(dirty), args.rounds), MESSAGE),
        ("fold only", timings(lambda: wf.fold(clean), args.rounds), MESSAGE),
        ("guard, clean", timings(lambda: stream(wf, clean), args.rounds // 10), MESSAGE),
        ("opencc t2s", timings(lambda: t2s.convert(clean), max(args.rounds // 50, 5)), MESSAGE),
    ]

    print(f"normaliser table (once per process):      {table_build * 1e3:8.1f} ms")
    print(f"build, {len(listed)} words ({wf.size} after folding): {build * 1e3:8.1f} ms")
    print(f"{'operation':<16} {'p50 us':>9} {'p99 us':>9} {'MB/s':>8}")
    for name, samples, chars in rows:
        p50 = statistics.median(samples)
        megabytes = len(clean[:chars].encode()) / 1e6
        print(f"{name:<16} {p50 * 1e6:9.1f} {p(samples, 99) * 1e6:9.1f} {megabytes / p50:8.1f}")
    print(f"(messages of {MESSAGE} characters; the guard gets them in pieces of {PIECE};")
    print(" 'guard' is the whole answer, 'opencc t2s' is OpenCC's own convert, for comparison)")


if __name__ == "__main__":
    main()
