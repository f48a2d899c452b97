"""Benchmarks for the budgets in the design: each module has a function the CLI calls and a main()."""
