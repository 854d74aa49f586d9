#!/bin/bash
# bench/table.sh RESULTS.json: the markdown table of a bench run.
set -eu
f=$1
echo "| # | tool | measure | median | spread (min – max) | n | budget | met |"
echo "|---|---|---|---:|---|---:|---|---|"
jq -r '.results[] |
  def num: if . == null then "" elif (. | floor) == . then (. | tostring)
           else ((. * 1000 | round) / 1000 | tostring) end;
  if .note then
    "| \(.item) | \(.tool) | \(.metric) | not measured | \(.note) | 0 | | |"
  else
    "| \(.item) | \(.tool) | \(.metric) | \(.median | num) \(.unit) | \(.min | num) – \(.max | num) | \(.n) | \(.budget // "" | gsub("<="; "≤ ") | gsub(">="; "≥ ")) | \(if .pass == true then "yes" elif .pass == false then "**no**" else "" end) |"
  end' "$f"
