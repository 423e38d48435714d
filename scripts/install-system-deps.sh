#!/usr/bin/env bash
# System packages the tests and benchmarks use: GDAL's command-line tools (gdalinfo,
# gdal_translate, gdalwarp) to check products the way QGIS users will open them, and
# Debian's Chromium with its WebDriver for the publish tree's web viewer test
# (tests/unit/test_viewer.py) and benchmark (benchmarks/bench_viewer.py).
set -euo pipefail
missing=()
command -v gdalinfo >/dev/null 2>&1 || missing+=(gdal-bin)
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if [ ${#browser[@]} -ne 0 ]; then
    echo "ai4land: the viewer test needs: ${browser[*]} (e.g. sudo apt-get install ${browser[*]})" >&2
  fi
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "ai4land: please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" "${browser[@]}"
