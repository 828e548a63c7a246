#!/usr/bin/env bash
# Peak RSS of the streaming converter on a synthetic checkpoint with the real 12B layer sizes.
# Usage: bash benchmarks/convert_memory.sh [LAYERS] [WORKDIR]   (default 10 layers, /tmp/gemma4-convert-bench)
set -euo pipefail
LAYERS=${1:-10}
WORK=${2:-/tmp/gemma4-convert-bench}
mkdir -p "$WORK"
SRC="$WORK/synth-12b-${LAYERS}l"
[ -d "$SRC" ] || /usr/bin/time -v gemma4 synth "$SRC" --geometry 12b --layers "$LAYERS" --dtype bfloat16 2> "$WORK/synth.time"
SRC_BYTES=$(du -sb "$SRC" | cut -f1)
for spec in "4 uniform" "4 mixed" "8 uniform" "16 uniform"; do
  set -- $spec
  OUT="$WORK/out-${1}bit-${2}"
  /usr/bin/time -v gemma4 convert "$SRC" "$OUT" --bits "$1" --recipe "$2" --force > "$WORK/convert-${1}-${2}.log" 2> "$WORK/convert-${1}-${2}.time"
  RSS_KB=$(grep "Maximum resident set size" "$WORK/convert-${1}-${2}.time" | awk '{print $NF}')
  WALL=$(grep "Elapsed (wall clock)" "$WORK/convert-${1}-${2}.time" | awk '{print $NF}')
  OUT_BYTES=$(du -sb "$OUT" | cut -f1)
  python3 -c "import sys; s,r,o=map(int,sys.argv[1:4]); print(f'bits={sys.argv[4]} recipe={sys.argv[5]} source={s/1e9:.2f} GB out={o/1e9:.2f} GB peak_rss={r/1e6:.2f} GB ratio={r*1024/s:.3f} wall={sys.argv[6]}')" \
    "$SRC_BYTES" "$RSS_KB" "$OUT_BYTES" "$1" "$2" "$WALL"
  rm -rf "$OUT"
done
