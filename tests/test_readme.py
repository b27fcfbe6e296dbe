from __future__ import annotations

from pathlib import Path

from pkce_middleware import PKCEConfig
from scripts.update_readme import reason_rows

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_option_table_matches_the_config() -> None:
    text = README.read_text()
    start, end = text.index("<!-- options:start -->\n"), text.index("<!-- options:end -->")
    documented = text[start:end].splitlines()[3:]
    expected = [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in PKCEConfig.options()]
    assert documented == expected, "README option table is stale; replace its rows with:\n" + "\n".join(expected)


def test_readme_lists_every_reason_code() -> None:
    text = README.read_text()
    start, end = text.index("<!-- reasons:start -->\n"), text.index("<!-- reasons:end -->")
    documented = text[start:end].splitlines()[1:]
    assert documented == reason_rows(), "README reason table is stale; run `make readme`"


def test_readme_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:40])
    assert "make demo" in first_screen and "make test" in first_screen
