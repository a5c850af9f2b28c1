#!/usr/bin/env bash
# Refresh the console's copy of Chart.js from the npm registry: `bash scripts/vendor_chartjs.sh 4.6.2`.
# npm checks the package against the registry's integrity hash; the file's SHA-256 and version are then written to
# src/payhub/console/static/vendor/SHA256SUMS and CHARTJS_VERSION, which tests/unit/test_console_assets.py checks.
set -euo pipefail
version="${1:?the Chart.js version, e.g. 4.6.2}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="$here/src/payhub/console/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "chart.js@$version" >/dev/null && tar xzf chart.js-*.tgz)
cp "$work/package/dist/chart.umd.min.js" "$vendor/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$vendor/chart.js-LICENSE.md"
(cd "$vendor" && sha256sum chart.umd.min.js > SHA256SUMS && echo "$version" > CHARTJS_VERSION)
echo "Chart.js $version vendored into $vendor"
