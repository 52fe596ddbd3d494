#!/usr/bin/env bash
# Re-run the small experiments behind docs/results/*.md, archive their small files here, and regenerate the docs.
#
#     experiments/results/regenerate.sh [RUNS_DIR]     (default: runs/results; about 40 minutes on 2 busy CPU cores)
#
# Every run uses the packaged demo config (synthetic MIMIC-shaped notes → all-MiniLM-L6-v2 → MLP) shrunk to
# 600 notes / 30 codes so that it finishes in minutes; federated runs use 5 IID clients and 5 rounds. The
# numbers are therefore smoke-test scale: they show what each feature reports, not paper-scale results.
# Then `fedicd report ... --archive` copies each run's small files (results.json without bulky fields,
# history.csv, partition stats, attack reports) to experiments/results/<area>/<run>/, and
# `fedicd report --docs` rewrites docs/results/*.md and the README's headline table from them.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-runs/results}"
CACHE="${FEDICD_RESULTS_CACHE:-$RUNS/cache}"
mkdir -p "$RUNS"
SMALL=(--set data.n_notes=600 --set data.n_codes=30 --set data.min_train_count=5 --set embedding.max_tokens=128
       --set "cache_dir=\"$CACHE\"")
FED=(--set 'train.mode="federated"' --set partition.n_clients=5 --set partition.min_partition_size=5
     --set federated.rounds=5 --set federated.fraction_evaluate=1.0 --set train.batch_size=32)
run() {  # AREA NAME fedicd-args...; SKIP_DONE=1 keeps a run that already finished
  local area=$1 name=$2 f; shift 2
  for f in results.json partition.json leakage_utility.json; do
    if [ -n "${SKIP_DONE:-}" ] && [ -e "$RUNS/$area/$name/$f" ]; then echo "== $area/$name (kept)"; return; fi
  done
  echo "== $area/$name"; fedicd "$@" --out "$RUNS/$area/$name" --overwrite
}

run central demo_mlp run fedicd/resources/demo.toml "${SMALL[@]}" --set name='"demo_mlp"'
run central demo_deep_mlp run fedicd/resources/demo.toml "${SMALL[@]}" --set name='"demo_deep_mlp"' --set 'train.head="deep_mlp"'
run partitions iid partition fedicd/resources/demo.toml "${SMALL[@]}" --set name='"iid"' --set partition.n_clients=5
for a in 1.0 0.1; do
  run partitions "dirichlet_$a" partition fedicd/resources/demo.toml "${SMALL[@]}" --set name="\"dirichlet_$a\"" \
      --set partition.n_clients=5 --set 'partition.scheme="dirichlet"' --set partition.alpha=$a
done
run federated fedavg run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"fedavg"'
run federated scaffold run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"scaffold"' \
    --set 'federated.strategy="scaffold"'
run federated fedavg_dirichlet_0.1 run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" \
    --set name='"fedavg_dirichlet_0.1"' --set 'partition.scheme="dirichlet"' --set partition.alpha=0.1
run privacy sample_dp_eps5 run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"sample_dp_eps5"' \
    --set 'privacy.dp="sample"' --set privacy.target_epsilon=5.0
run privacy client_dp_noise1 run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"client_dp_noise1"' \
    --set 'privacy.dp="client"' --set privacy.noise=1.0 --set privacy.clip=0.5
fedicd keys --out "$RUNS/keys" --overwrite --max-clients 8
run secure ckks run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"ckks"' \
    --set 'secure_aggregation.method="ckks"' --set "secure_aggregation.key_dir=\"$RUNS/keys\"" \
    --set "secure_aggregation.evaluator_key=\"$RUNS/keys/secret.ctx\""
run secure secagg_plus run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"secagg_plus"' \
    --set 'secure_aggregation.method="secagg+"'
if python -c 'import openfhe' 2>/dev/null; then  # threshold CKKS needs the optional openfhe (see the README)
  run secure ckks_threshold run fedicd/resources/demo.toml "${SMALL[@]}" "${FED[@]}" --set name='"ckks_threshold"' \
      --set 'secure_aggregation.method="ckks-threshold"'
fi
run attacks attribute_female attack attribute fedicd/resources/demo.toml "${SMALL[@]}" \
    --set name='"attribute_female"' --attribute female --n-labelled 200 --defences none noise:0.2 quantize:1
run attacks bow_inversion attack invert fedicd/resources/demo.toml "${SMALL[@]}" --set name='"bow_inversion"' \
    --defences none noise:0.2

[ -n "${SKIP_REPORT:-}" ] && exit 0
for area in central partitions federated privacy attacks secure; do
  fedicd report "$RUNS/$area"/* --archive "experiments/results/$area" --out "$RUNS/report_$area"
done
fedicd report --docs
