"""Rewrite the README's option table from `PKCEConfig` (tests/test_readme.py checks they agree)."""

from __future__ import annotations

from pathlib import Path

from pkce_middleware import PKCEConfig

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- options:start -->\n", "<!-- options:end -->"


def main() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    rows = [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in PKCEConfig.options()]
    table = "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows])
    README.write_text(f"{head}{START}{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
