"""Rewrite the README's option and reason code tables from the code (tests/test_readme.py checks they agree)."""

from __future__ import annotations

from pathlib import Path

from pkce_middleware import PKCEConfig, Reason

README = Path(__file__).resolve().parent.parent / "README.md"


def option_rows() -> list[str]:
    rows = [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in PKCEConfig.options()]
    return ["| variable | default | meaning |", "|---|---|---|", *rows]


def reason_rows() -> list[str]:
    return ["| reason | meaning |", "|---|---|", *(f"| `{reason}` | {reason.description} |" for reason in Reason)]


def replace_table(text: str, name: str, rows: list[str]) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}{chr(10).join(rows)}\n{end}{tail}"


def main() -> None:
    text = replace_table(README.read_text(), "options", option_rows())
    README.write_text(replace_table(text, "reasons", reason_rows()))


if __name__ == "__main__":
    main()
