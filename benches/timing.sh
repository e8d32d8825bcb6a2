# Sourced by the benchmarks: `once OUT COMMAND...` times one run of COMMAND
# (wall milliseconds, and peak RSS in KB from /usr/bin/time) and keeps the
# best time and the largest RSS seen so far in OUT ("ms kb").
once() {
  local out=$1; shift
  local t0 t1 ms kb best=999999999 rss=0
  [ -f "$out" ] && read -r best rss < "$out"
  t0=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$out.rss" "$@"
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  kb=$(cat "$out.rss")
  [ "$ms" -lt "$best" ] && best=$ms
  [ "$kb" -gt "$rss" ] && rss=$kb
  echo "$best $rss" > "$out"
}
