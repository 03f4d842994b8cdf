#!/usr/bin/env bash
# The training-recipe experiment (figures for docs/experiments.md, not a test): K-fold
# cross-validation on the shared data. Rows are dealt into K folds in turn (row i goes to fold
# i mod K); for each fold a student is trained on the other folds' TEACHER labels only (soft
# self-consistency votes) and scored on the fold against the EXPERTS' labels. Every recipe is
# run on the same folds. Prints, per recipe, the mean over folds and the pooled out-of-fold
# accuracy and macro-F1 with 95 % bootstrap intervals (2,000 resamples of the pooled items), the
# mean training time, and the paired difference to the first recipe (1,000 bootstraps over the same
# items, so fold-to-fold noise cancels): scripts/recipe_report.py, which can also be run alone to
# pair recipes kept in different folders (a --train-rows arm against an every-label one).
#
# A recipe is NAME=FLAGS (flags of `newsd train`). Results are kept under .run/experiment-recipe
# per recipe and fold, so an interrupted run resumes and a new recipe reuses the others.
# --train-rows N trains each fold on only the first N of its training rows (a learning curve: the
# same test folds, fewer labels); its results are kept apart (.run/experiment-recipe-nN).
# With --train-rows, a recipe's flags may include --self-train M (not a flag of `newsd train`):
# the student trained on the N labelled rows then classifies the fold's other training rows, the
# ones with margin >= M join as soft targets (self-training, as trainer.pseudo_label_min_margin
# does in the loop), and a second student trained on both is the one scored.
# With --train-rows N, --select STRATEGY (margin, entropy or random; not a flag of `newsd train`)
# simulates the loop's choice of what to send to the teacher instead of taking the first N rows:
# a cold-start student is trained on the first C rows (--cold C, default N/3), it classifies the
# rest of the fold's training rows (the pool), the N - C rows the strategy ranks first (smallest
# margin, largest entropy, or at random) are "sent to the teacher" (their teacher labels
# revealed), and the student trained on the cold-start rows plus those is the one scored.
# entropy-balanced lets the predicted classes take turns, each giving its most uncertain row;
# entropy-diverse passes over a row whose words mostly repeat a row already labelled or chosen.
# bald (with --committee M, M >= 2) ranks by how much M cold-start students of different seeds
# disagree (the mutual information of their predictions), which sets apart what the student does
# not know yet from what is ambiguous to any reader (and to the teacher); with --committee, the
# other ranking strategies rank by the committee's mean probabilities.
# --select-rounds R (default 1) spends the N - C in R equal rounds, each ranked by a student
# trained on every label so far, as the live loop selects in many small rounds while the stream
# arrives (scripts/experiment-distill.sh measures the loop itself, on one split). With --self-train as
# well, the pool left after the last round is what self-training pseudo-labels. Its "train s"
# includes the selecting students and their passes over the pool.
# usage: scripts/experiment-recipe.sh [--data CSV] [--folds K] [--train-rows N] [--fresh] [NAME=FLAGS ...]
#   (FLAGS may include --self-train M, --select margin|entropy|entropy-balanced|entropy-diverse|bald|random,
#   --committee M, --select-rounds R and --cold C with --train-rows)
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; folds=5; recipes=(); fresh=0; rows=0
# Stored results are kept per recipe and this: bump it when a default of `newsd train` changes
# (2: --min-steps 250).
defaults=2
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift 2;;
    --folds) folds=$2; shift 2;;
    --fresh) fresh=1; shift;;
    --train-rows) rows=$2; shift 2;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) recipes+=("$1"); shift;;
  esac
done
[ ${#recipes[@]} -gt 0 ] || recipes=("defaults=")
[ -f "$data" ] || { echo "needs $data" >&2; exit 1; }
./scripts/setup.sh >&2
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
work=$PWD/.run/experiment-recipe; [ "$rows" -gt 0 ] && work=$work-n$rows; [ $fresh = 1 ] && rm -rf "$work"; mkdir -p "$work/folds"
export NEWSD_BASE_MODEL_DIR=$PWD/.models/all-MiniLM-L6-v2
# The text column of a CSV, a line each (what `newsd classify` reads).
texts() { python3 -c "import csv,sys; [print(r['text']) for r in csv.DictReader(open(sys.argv[1], newline=''))]" "$1"; }
python3 - "$data" "$work/folds" "$folds" "$rows" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
head, body, k, n = rows[0], rows[1:], int(sys.argv[3]), int(sys.argv[4])
for f in range(k):
    test = [r for i, r in enumerate(body) if i % k == f]
    train = [r for i, r in enumerate(body) if i % k != f]
    if n > 0:
        csv.writer(open(f"{sys.argv[2]}/unlabelled{f}.csv", 'w', newline='')).writerows([head] + train[n:])
        csv.writer(open(f"{sys.argv[2]}/all{f}.csv", 'w', newline='')).writerows([head] + train)
        train = train[:n]
    csv.writer(open(f"{sys.argv[2]}/train{f}.csv", 'w', newline='')).writerows([head] + train)
    csv.writer(open(f"{sys.argv[2]}/test{f}.csv", 'w', newline='')).writerows([head] + test)
PY
for recipe in "${recipes[@]}"; do
  name=${recipe%%=*}; flags=${recipe#*=}; self_train=; select=; select_rounds=1; cold=$((rows / 3))
  if [[ " $flags " == *" --self-train "* ]]; then
    self_train=$(sed -E 's/.*--self-train ([^ ]+).*/\1/' <<< "$flags"); flags=$(sed -E 's/--self-train [^ ]+ ?//' <<< "$flags")
    [ "$rows" -gt 0 ] || { echo "--self-train needs --train-rows" >&2; exit 2; }
  fi
  if [[ " $flags " == *" --select "* ]]; then
    select=$(sed -E 's/.*--select ([^ ]+).*/\1/' <<< "$flags"); flags=$(sed -E 's/--select [^ ]+ ?//' <<< "$flags")
    [ "$rows" -gt 0 ] || { echo "--select needs --train-rows" >&2; exit 2; }
    case $select in margin|entropy|entropy-balanced|entropy-diverse|bald|random) ;; *) echo "--select: margin, entropy, entropy-balanced, entropy-diverse, bald or random, not $select" >&2; exit 2;; esac
  fi
  if [[ " $flags " == *" --cold "* ]]; then
    cold=$(sed -E 's/.*--cold ([^ ]+).*/\1/' <<< "$flags"); flags=$(sed -E 's/--cold [^ ]+ ?//' <<< "$flags")
    [ -n "$select" ] || { echo "$name: --cold needs --select" >&2; exit 2; }
    [[ $cold =~ ^[1-9][0-9]*$ ]] && [ "$cold" -lt "$rows" ] || { echo "$name: --cold: a whole number from 1 to $((rows - 1)), not $cold" >&2; exit 2; }
  fi
  committee=1
  if [[ " $flags " == *" --committee "* ]]; then
    committee=$(sed -E 's/.*--committee ([^ ]+).*/\1/' <<< "$flags"); flags=$(sed -E 's/--committee [^ ]+ ?//' <<< "$flags")
    [ -n "$select" ] || { echo "$name: --committee needs --select" >&2; exit 2; }
    [[ $committee =~ ^[1-9][0-9]*$ ]] || { echo "$name: --committee: a positive whole number, not $committee" >&2; exit 2; }
  fi
  [ "$select" != bald ] || [ "$committee" -ge 2 ] || { echo "$name: --select bald needs --committee 2 or more" >&2; exit 2; }
  [ "$select" != random ] || [ "$committee" = 1 ] || { echo "$name: --select random ranks nothing: no --committee" >&2; exit 2; }
  if [[ " $flags " == *" --select-rounds "* ]]; then
    select_rounds=$(sed -E 's/.*--select-rounds ([^ ]+).*/\1/' <<< "$flags"); flags=$(sed -E 's/--select-rounds [^ ]+ ?//' <<< "$flags")
    [ -n "$select" ] || { echo "$name: --select-rounds needs --select" >&2; exit 2; }
    [[ $select_rounds =~ ^[1-9][0-9]*$ ]] || { echo "$name: --select-rounds: a positive whole number, not $select_rounds" >&2; exit 2; }
  fi
  dir=$work/$name; mkdir -p "$dir"
  # A recipe whose flags (--self-train, --select, --select-rounds and --cold included) or whose
  # `newsd train` defaults changed since its results were stored starts again.
  key="${recipe#*=} (newsd train defaults $defaults)"
  if [ -f "$dir/flags" ] && [ "$(cat "$dir/flags")" != "$key" ]; then rm -rf "${dir:?}"/*; fi
  echo "$key" > "$dir/flags"
  for f in $(seq 0 $((folds - 1))); do
    [ -f "$dir/pred$f.csv" ] && continue
    echo "== $name fold $f: newsd train $flags" >&2
    start=$(date +%s.%N)
    trainset=$work/folds/train$f.csv; : > "$dir/train$f.txt"; : > "$dir/train$f.log"
    unlabelled=$work/folds/unlabelled$f.csv
    if [ -n "$select" ]; then
      python3 - "$work/folds/all$f.csv" "$cold" "$dir/selected$f.csv" "$dir/pool$f.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline=''))); head, body, cold = rows[0], rows[1:], int(sys.argv[2])
csv.writer(open(sys.argv[3], 'w', newline='')).writerows([head] + body[:cold])
csv.writer(open(sys.argv[4], 'w', newline='')).writerows([head] + body[cold:])
PY
      for round in $(seq 1 "$select_rounds"); do
        # --committee M: M cold-start students, the first with the recipe's seed and the others
        # with the next seeds, rank the pool by their averaged probabilities (bald: by how much
        # they disagree), as a committee tells what the student does not know from what is
        # ambiguous to everyone.
        # (42 is `newsd train`'s default seed.)
        seed=$(sed -nE 's/.*--seed[= ]([^ ]+).*/\1/p' <<< "$flags"); seed=${seed:-42}; members=()
        for m in $(seq 0 $((committee - 1))); do
          member_flags=$flags; [ "$m" = 0 ] || member_flags="$(sed -E 's/--seed[= ][^ ]+ ?//' <<< "$flags") --seed $((seed + m))"
          # shellcheck disable=SC2086 # the recipe's flags are words
          "$newsd" train --data "$dir/selected$f.csv" --label-column label_llm_cot_multiple --soft-label-columns sc_iter1,sc_iter2,sc_iter3 \
            --no-early-exit $member_flags --out "$dir/cold$f" >> "$dir/train$f.txt" 2>> "$dir/train$f.log"
          members+=("$dir/poolpred$f-$m.jsonl")
          texts "$dir/pool$f.csv" \
            | "$newsd" classify --model "$dir/cold$f" > "${members[-1]}"
          rm -rf "$dir/cold$f"
        done
        python3 - "$dir/selected$f.csv" "$dir/pool$f.csv" "$rows" "$select" "$f" "$round" "$select_rounds" "${members[@]}" <<'PY'
import csv, json, math, random, re, sys
labelled = list(csv.reader(open(sys.argv[1], newline=''))); pool = list(csv.reader(open(sys.argv[2], newline='')))
members = [[json.loads(l) for l in open(p)] for p in sys.argv[8:]]
head, pool = pool[0], pool[1:]
for preds in members:
    assert len(preds) == len(pool), (len(preds), len(pool))
    assert all(p['text'] == r[head.index('text')] for p, r in zip(preds, pool)), 'classify output out of step with the pool'
n, strategy, fold, rnd, rounds = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
want = (n - (len(labelled) - 1)) // (rounds - rnd + 1)   # the budget left, shared by the rounds left
H = lambda ps: -sum(p * math.log(p) for p in ps if p > 0)
def committee(i):
    """The label, margin and entropy of the members' mean probabilities, and the mutual information
    between the prediction and the member (bald): what the committee disagrees on."""
    labels = sorted(members[0][i]['probabilities'])
    mean = [sum(m[i]['probabilities'][l] for m in members) / len(members) for l in labels]
    top = sorted(mean, reverse=True)
    return {'label': labels[mean.index(top[0])], 'margin': top[0] - top[1], 'entropy': H(mean),
            'bald': H(mean) - sum(H(m[i]['probabilities'].values()) for m in members) / len(members)}
# One student ranks by its own figures, as `newsd classify` gave them.
preds = members[0] if len(members) == 1 else [committee(i) for i in range(len(pool))]
by_entropy = sorted(range(len(pool)), key=lambda i: -preds[i]['entropy'])
if strategy == 'margin': order = sorted(range(len(pool)), key=lambda i: preds[i]['margin'])
elif strategy == 'bald': order = sorted(range(len(pool)), key=lambda i: -preds[i]['bald'])
elif strategy == 'entropy': order = by_entropy
elif strategy == 'entropy-balanced':
    # The predicted classes take turns, each giving its most uncertain item: macro-F1 weighs the
    # classes alike, and plain entropy spends most of the budget on the neutral/positive border.
    queues = {}
    for i in by_entropy: queues.setdefault(preds[i]['label'], []).append(i)
    queues = [q[::-1] for _, q in sorted(queues.items())]; order = []
    while any(queues): order += [q.pop() for q in queues if q]
elif strategy == 'entropy-diverse':
    # Most entropy first, passing over a sentence whose words mostly repeat one already labelled
    # or chosen (Jaccard > 0.6): the news repeats templates, and one label teaches the template.
    words = lambda t: frozenset(re.findall(r'[a-z]+', t.lower()))
    text = head.index('text'); seen = [words(r[text]) for r in labelled[1:]]; order = []; passed = []
    for i in by_entropy:
        w = words(pool[i][text])
        if any(len(w & s) > 0.6 * len(w | s) for s in seen): passed.append(i)
        else: order.append(i); seen.append(w)
    order += passed
else: order = list(range(len(pool))); random.Random(fold + 1000 * (rnd - 1)).shuffle(order)
chosen = set(order[:want])
csv.writer(open(sys.argv[1], 'w', newline='')).writerows(labelled + [pool[i] for i in order[:want]])
csv.writer(open(sys.argv[2], 'w', newline='')).writerows([head] + [r for i, r in enumerate(pool) if i not in chosen])
print(f"--select {strategy} round {rnd}/{rounds}: {len(labelled) - 1} labelled + {len(chosen)} chosen of {len(pool)}", file=sys.stderr)
PY
      done
      trainset=$dir/selected$f.csv; unlabelled=$dir/pool$f.csv
    fi
    # shellcheck disable=SC2086 # the recipe's flags are words
    "$newsd" train --data "$trainset" --label-column label_llm_cot_multiple --soft-label-columns sc_iter1,sc_iter2,sc_iter3 \
      --no-early-exit $flags --out "$dir/model$f" >> "$dir/train$f.txt" 2>> "$dir/train$f.log"
    if [ -n "$self_train" ]; then
      texts "$unlabelled" \
        | "$newsd" classify --model "$dir/model$f" > "$dir/pseudo$f.jsonl"
      python3 - "$trainset" "$dir/pseudo$f.jsonl" "$self_train" "$dir/selftrain$f.csv" <<'PY'
import csv, json, sys
labels = ['negative', 'neutral', 'positive']
out = csv.writer(open(sys.argv[4], 'w', newline='')); out.writerow(['text', 'label'] + labels)
for r in csv.DictReader(open(sys.argv[1], newline='')):   # the teacher's rows: vote shares, as newsd reads them
    votes = [r[c].strip().lower() for c in ('sc_iter1', 'sc_iter2', 'sc_iter3')]
    counts = [votes.count(l) for l in labels]
    if sum(counts) == 0: counts = [1.0 if r['label_llm_cot_multiple'] == l else 0.0 for l in labels]
    out.writerow([r['text'], r['label_llm_cot_multiple']] + [c / sum(counts) for c in counts])
kept = 0
for line in open(sys.argv[2]):
    p = json.loads(line)
    if p['margin'] >= float(sys.argv[3]):
        out.writerow([p['text'], p['label']] + [p['probabilities'][l] for l in labels]); kept += 1
print(f"self-training: {kept} pseudo-labelled rows", file=sys.stderr)
PY
      rm -rf "$dir/model$f"
      # shellcheck disable=SC2086 # the recipe's flags are words
      "$newsd" train --data "$dir/selftrain$f.csv" --label-column label --soft-label-columns negative,neutral,positive \
        --no-early-exit $flags --out "$dir/model$f" >> "$dir/train$f.txt" 2>> "$dir/train$f.log"
    fi
    python3 -c "print($(date +%s.%N) - $start)" > "$dir/seconds$f"
    "$newsd" eval --model "$dir/model$f" --data "$work/folds/test$f.csv" --label-column label_experts --precision int8 \
      --json --predictions-out "$dir/pred$f.csv.tmp" > "$dir/eval$f.json"
    mv "$dir/pred$f.csv.tmp" "$dir/pred$f.csv"
    rm -rf "$dir/model$f"
  done
done
python3 scripts/recipe_report.py "$work" "$folds" "${recipes[@]%%=*}"
