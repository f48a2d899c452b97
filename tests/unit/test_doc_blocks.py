"""How the docs test reads a Markdown file: block kinds, joined commands, output transcripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.docs import blocks, commands, printed_pattern, transcript

PAGE = """# A page

```
seqrank run   # the whole pipeline
```

<!-- doc: cluster -->
```
kubectl apply -f x.yaml
```

```python
print("hi")
```

<!-- doc: output -->
```
$ seqrank --version
seqrank 0.1.0
```
"""


def test_blocks_take_their_kind_from_the_comment_before_the_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    found = blocks(page)
    assert [(b.kind, b.line) for b in found] == [
        ("commands", 3),
        ("cluster", 8),
        ("python", 12),
        ("output", 17),
    ]
    assert found[1].text == "kubectl apply -f x.yaml" and found[1].where == "page.md:8"


def test_an_unknown_kind_is_refused_with_where_it_is(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- doc: comands -->\n```\nls\n```\n")
    with pytest.raises(ValueError, match=r"page.md:2: unknown doc block kind 'comands'"):
        blocks(page)


def test_commands_join_continuations_and_drop_comments() -> None:
    text = "# set up\nseqrank run \\\n  --set a=1   # why\n\necho '#not a comment'\n"
    assert commands(text) == ["seqrank run --set a=1", "echo '#not a comment'"]


def test_transcript_pairs_commands_with_what_they_print() -> None:
    assert transcript("$ a\none\ntwo\n$ b\n") == [("a", ["one", "two"]), ("b", [])]


def test_printed_pattern_stands_for_paths_and_elisions() -> None:
    pattern = printed_pattern("state: /path/to/.seqrank (... free)")
    assert pattern.fullmatch("state: /srv/runs/.seqrank (12 GiB free)")
    assert pattern.fullmatch("state: /.seqrank (1 free)")
    assert not pattern.fullmatch("state: relative/.seqrank (1 free)")
