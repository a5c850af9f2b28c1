"""payhub's benchmarks: ``python -m bench`` runs one pipeline run, ``python -m bench --compare`` every figure of the
performance targets with its ratio. See bench/README.md."""
