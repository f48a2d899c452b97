"""Test-wide settings: library caches and telemetry stay out of $HOME during tests too."""

import tempfile

from seqrank.paths import StatePaths, keep_state_local

keep_state_local(StatePaths(tempfile.mkdtemp(prefix="seqrank-test-state-")))
