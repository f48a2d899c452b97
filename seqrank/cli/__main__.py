"""`python -m seqrank.cli` (what torchrun's `-m seqrank.cli` runs in every process): the `seqrank` CLI."""

from seqrank.cli import main

if __name__ == "__main__":
    main()
