#!/bin/sh
# Stands in for the job that downloads the sanctions lists (payhub never downloads them): it "fetches" the
# example's FICTIONAL published lists from published/ into lists/, as a download would leave them. The CSV files
# get today's modification time (the ofac_csv list's date) and eu.xml today's generationDate (the EU list's date),
# so the lists are fresh whatever day you try the example. Never do this to real lists: a production job downloads
# them from the publisher and changes nothing (see docs/compliance.md, "When a list is stale").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/lists"
for name in sdn.csv alt.csv add.csv; do
    cp "$here/published/$name" "$here/lists/$name"
    touch "$here/lists/$name"
done
sed -E "s/generationDate=\"[^\"]*\"/generationDate=\"$(date -u +%Y-%m-%d)T00:00:00Z\"/" \
    "$here/published/eu.xml" > "$here/lists/eu.xml"
echo "fetched sdn.csv, alt.csv, add.csv, eu.xml into $(dirname "$0")/lists/, dated $(date -u +%Y-%m-%d)"
