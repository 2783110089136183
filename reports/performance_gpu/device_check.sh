#!/usr/bin/env bash
# Issue 27's device check: one run on one GPU that profiles the step, times it before and
# after the CUDA-graph and fused-Gram changes, and runs the CUDA tests.
#
#   bash reports/performance_gpu/device_check.sh prepare       # here, once: wheels and DomainBed to carry
#   bash reports/performance_gpu/device_check.sh run           # on the device machine (writes under $OUT)
#   bash reports/performance_gpu/device_check.sh run --cpu-dry-run   # here: every stage, tiny, on the CPU
#
# The device tool's call (about 7 minutes of command on an H200, estimated; give it 570 s):
#   run(command="bash reports/performance_gpu/device_check.sh run", carry=[".whl", ".carry"], timeout_s=570)
#
# Stages, in order (each has a time limit; its output is packed into $OUT/results.tar.gz as
# soon as it ends, so a run cut short still returns what it finished; a failed stage does
# not stop the next):
#   1. the profile: one step of ERM, GradAvg with and without CUDA graphs, and DGE
#      (ResNet-50, 224 px, B = 32, K = 3, fp32);
#   2. the CUDA tests (`pytest -m cuda`): the captured step equals the eager one, the
#      compiled Gram pass equals the eager one, the engine end to end;
#   3. the benchmark at ResNet-50, 224 px, B = 32, K = 3, fp32: DGE and GradAvg without
#      CUDA graphs (the default, the step before) and with ("-graphs"), and DGE with
#      autograd.grad rows, with and without ("before" and "after" are rows of one run,
#      measured interleaved);
#   4. the same rows, shorter, in bf16, and for ResNet-18 in fp32 and bf16;
#   5. the other registry methods at ResNet-50, fp32, shorter.
set -uo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-}"
dry_run=0
[ "${2:-}" = "--cpu-dry-run" ] && dry_run=1

if [ "$mode" = "prepare" ]; then
  # The device machine reaches no registry: DomainBed's imports that its image lacks
  # (wilds and its needs, parameterized for DomainBed's model tests) travel as wheels, and
  # DomainBed itself as a copy. Both folders are ignored by git.
  set -e
  for ignored in /.whl/ /.carry/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    parameterized==0.9.0 wilds==2.0.0 ogb==1.3.6 outdated==0.2.2 littleutils==0.2.4 pytz
  domainbed="${DOMAINBED_DIR:-../shared/DomainBed}"
  rm -rf .carry/DomainBed && mkdir -p .carry && cp -r "$domainbed" .carry/DomainBed && rm -rf .carry/DomainBed/.git
  du -sh .whl .carry
  exit 0
fi
if [ "$mode" != "run" ]; then
  echo "usage: $0 prepare | run [--cpu-dry-run]" >&2
  exit 2
fi

out="${OUT:-$(mktemp -d)}"
work="$(mktemp -d)"
log="$out/device_check.log"
export OUTDATED_IGNORE=1 PYTHONUNBUFFERED=1 CI=""
python="${PYTHON:-python3}"

pack() { tar -czf "$out/results.tar.gz" -C "$work" . ; }
stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log, record the exit status, pack
  local name="$1" limit="$2"; shift 2
  echo "== $name: $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  tail -n 60 "$work/$name.log" >> "$log"
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
  pack
}

if [ "$dry_run" = 1 ]; then
  # This machine's environment already has DomainBed and the plugin set up; leave it as it is.
  device=cpu; big=resnet18; size=16; batch=2; warmup=1; steps=1; short_warmup=1; short_steps=1
  params=(--params 4096)
  export OMP_NUM_THREADS=1
else
  # The device machine: wheels into a private folder, the plugin importable from this copy,
  # DomainBed from the carried copy (setup_domainbed writes both .pth files).
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$log" 2>&1 || echo "wheels did not install (was 'prepare' run and .whl carried?)" | tee -a "$log"
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  export DOMAINBED_DIR="$PWD/.carry/DomainBed"
  $python -m domainbed_dge.setup_domainbed "$DOMAINBED_DIR" >> "$log" 2>&1 \
    || echo "setup_domainbed failed (was .carry carried?)" | tee -a "$log"
  device=cuda; big=resnet50; size=224; batch=32; warmup=5; steps=20; short_warmup=3; short_steps=10
  params=()
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$log" 2>&1
fi
$python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)" | tee -a "$log"

registry="$($python -c 'from domainbed_dge.experiments.timing import REGISTRY_METHODS as m; print(" ".join(m))')"
engine="DGE DGE-graphs GradAvg GradAvg-graphs"  # before (eager, the default) and after (CUDA graphs)
autograd="DGE-autograd DGE-autograd-graphs"
others="$(for m in $registry; do case " $engine " in *" $m "*) ;; *) echo -n "$m ";; esac; done)"
common=(--device "$device" --image-size "$size" --batch "$batch" --views 3 "${params[@]}")
bench() {  # bench NAME MODEL DTYPE WARMUP STEPS LIMIT METHODS...
  local name="$1" model="$2" dtype="$3" warm="$4" count="$5" limit="$6"; shift 6
  stage "$name" "$limit" $python -m domainbed_dge.benchmark "${common[@]}" --model "$model" --dtype "$dtype" \
    --warmup "$warm" --steps "$count" --methods "$@" --json "$work/$name.json"
}

# Estimated on an H200 (not measured): about 1 + 1.5 + 1.5 + 0.7 + 0.5 + 0.5 + 1.5 minutes.
stage profile 120 $python -m domainbed_dge.benchmark "${common[@]}" --model "$big" --warmup "$warmup" \
  --methods ERM GradAvg GradAvg-graphs DGE --profile "$work/profile"
stage cuda_tests 150 $python -m pytest -m cuda -q -p no:cacheprovider -rs --continue-on-collection-errors
bench "bench_${big}_fp32" "$big" fp32 "$warmup" "$steps" 180 $engine $autograd
bench "bench_${big}_bf16" "$big" bf16 "$short_warmup" "$short_steps" 90 $engine
if [ "$dry_run" = 0 ]; then
  bench bench_resnet18_fp32 resnet18 fp32 "$short_warmup" "$short_steps" 60 $engine
  bench bench_resnet18_bf16 resnet18 bf16 "$short_warmup" "$short_steps" 60 $engine
fi
bench "bench_${big}_fp32_others" "$big" fp32 "$short_warmup" "$short_steps" 150 $others
echo "results: $out/results.tar.gz ($(tar -tzf "$out/results.tar.gz" | grep -vc '/$') files)" | tee -a "$log"
