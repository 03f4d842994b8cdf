#!/usr/bin/env python3
"""The report of scripts/experiment-recipe.sh: cross-validated accuracy and macro-F1 per recipe.

Reads each recipe's out-of-fold predictions (DIR/pred<f>.csv: truth, predicted) and training
times (DIR/seconds<f>), and prints the mean over folds, the pooled accuracy and macro-F1 with 95 %
bootstrap intervals (2,000 resamples of the pooled items) and the paired difference in macro-F1 to
the first recipe (1,000 of the same resamples for both, so fold-to-fold noise cancels; tables
before this script used 500, so their paired intervals differ slightly when rerun).

A recipe is a directory under WORK, or any path to one: the every-label reference lives in
.run/experiment-recipe and the 30 % arms in .run/experiment-recipe-n434, and both were scored on
the same test folds, so they can be paired:

    scripts/recipe_report.py .run/experiment-recipe-n434 5 ../experiment-recipe/top4-smooth0.3 sel-entropy-s250
"""
import csv
import os
import random
import sys


def macro_f1(pairs):
    labels = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    f1s = []
    for label in labels:
        tp = sum(1 for t, p in pairs if t == label and p == label)
        fp = sum(1 for t, p in pairs if t != label and p == label)
        fn = sum(1 for t, p in pairs if t == label and p != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)


def accuracy(pairs):
    return sum(t == p for t, p in pairs) / len(pairs)


def interval(values):
    v = sorted(values)
    return v[int(0.025 * len(v))], v[int(0.975 * len(v)) - 1]


def main(work, k, recipes):
    results = {}
    for name in recipes:
        path = os.path.join(work, name)
        folds = [[(r['truth'], r['predicted']) for r in csv.DictReader(open(f"{path}/pred{f}.csv"))] for f in range(k)]
        secs = [float(open(f"{path}/seconds{f}").read()) for f in range(k)]
        results[name] = (folds, secs)
    base = [p for f in results[recipes[0]][0] for p in f]
    n = len(base)
    for name in recipes:
        pooled = [t for f in results[name][0] for t, _ in f]
        if pooled != [t for t, _ in base]:
            sys.exit(f"{name} was not scored on the same items as {recipes[0]}: cannot pair them")
    rng = random.Random(7)
    samples = [[rng.randrange(n) for _ in range(n)] for _ in range(2000)]
    print(f"{k}-fold cross-validation, n={n} (expert labels; trained on teacher labels only); 95% bootstrap intervals")
    width = max(22, max(len(r) for r in recipes) + 2)
    print(f"{'recipe':<{width}}{'acc (fold mean)':>16}{'F1 (fold mean)':>16}{'accuracy pooled [95% CI]':>28}"
          f"{'macro-F1 pooled [95% CI]':>28}{'ΔF1 vs first [95% CI]':>30}{'train s':>9}")
    for name in recipes:
        folds, secs = results[name]
        pooled = [p for f in folds for p in f]
        acc, f1 = accuracy(pooled), macro_f1(pooled)
        accs = [accuracy([pooled[i] for i in s]) for s in samples]
        f1s = [macro_f1([pooled[i] for i in s]) for s in samples]
        deltas = [macro_f1([pooled[i] for i in s]) - macro_f1([base[i] for i in s]) for s in samples[:1000]]
        (al, ah), (fl, fh), (dl, dh) = interval(accs), interval(f1s), interval(deltas)
        fa = sum(accuracy(f) for f in folds) / k
        ff = sum(macro_f1(f) for f in folds) / k
        print(f"{name:<{width}}{fa:>16.4f}{ff:>16.4f}{f'{acc:.4f} [{al:.4f}, {ah:.4f}]':>28}{f'{f1:.4f} [{fl:.4f}, {fh:.4f}]':>28}"
              f"{f'{f1 - macro_f1(base):+.4f} [{dl:+.4f}, {dh:+.4f}]':>30}{sum(secs) / k:>9.1f}")


if __name__ == '__main__':
    if len(sys.argv) < 4:
        sys.exit("usage: scripts/recipe_report.py WORK FOLDS RECIPE [RECIPE ...]  (the first is the paired reference)")
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
