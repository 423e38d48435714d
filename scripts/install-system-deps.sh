#!/usr/bin/env bash
# System packages the tests and benchmarks use: GDAL's command-line tools (gdalinfo,
# gdal_translate, gdalwarp) to check products the way QGIS users will open them.
set -euo pipefail
missing=()
command -v gdalinfo >/dev/null 2>&1 || missing+=(gdal-bin)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "ai4land: please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
