#!/usr/bin/env bash
# Your own data and encoder through dynmm, end to end. Run from this folder:
#   bash walkthrough.sh                 (DYNMM=path/to/dynmm to use another install; QUICK=1 for a 1-minute run)
set -euo pipefail
cd "$(dirname "$0")"
DYNMM=${DYNMM:-dynmm}
PYTHON=${PYTHON:-python}
SHORT=()
if [[ "${QUICK:-0}" == 1 ]]; then  # a smoke run: one epoch per stage
  SHORT=(--train.max_epochs=1 --dynmm.gate_train.max_epochs=1)
fi

# 1. write your arrays (here: a generated example) and check them
$PYTHON make_data.py
$DYNMM data check my_data.npz --format arrays

# 2. a static baseline: late fusion of both modalities
$DYNMM train static.yaml "${SHORT[@]:0:1}"

# 3. DynMM: text-only expert vs late fusion, a gate on the text (stage I experts, stage II gate, report)
$DYNMM train dynmm.yaml "${SHORT[@]}"

# 4. a λ sweep (experts shared with nothing else: they are trained once for the sweep)
$DYNMM sweep dynmm.yaml --lambdas 0,0.3,1 --output runs/own_pareto.json "${SHORT[@]}"

# 5. the report: the run's routing and the sweep's points on one accuracy-MAdds plot
$DYNMM report runs/own_dynmm --sweep runs/own_pareto.json
echo "open runs/own_dynmm/report.html"

# 6. the same from a parquet file (needs the arrow extra: pip install "dynmm[arrow]")
if [[ -f my_data.parquet ]]; then
  $DYNMM data check my_data.parquet --format arrays
  $DYNMM train dynmm.yaml --name=own_dynmm_parquet --data.options.path=my_data.parquet "${SHORT[@]}"
fi
