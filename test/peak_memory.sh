#!/usr/bin/env bash
# test/peak_memory.sh PID OUT STOP: samples the private memory (RssAnon, kB;
# shared buffers are not the backend's own) of process PID every 20 ms until
# the file STOP exists or PID ends, then writes the peak to OUT.
pid=$1 out=$2 stop=$3 peak=0 kb=
while [[ ! -e $stop ]] && kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [[ -n $kb && $kb -gt $peak ]] && peak=$kb
  sleep 0.02
done
echo "$peak" >"$out"
