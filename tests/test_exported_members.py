from __future__ import annotations

import pkce_middleware


def test_all_lists_every_public_name_sorted() -> None:
    public = sorted(
        (name for name in vars(pkce_middleware) if not name.startswith("_") and name != "annotations"),
        key=str.casefold,
    )
    assert pkce_middleware.__all__ == public


def test_public_names_report_the_package_as_their_module() -> None:
    for name in pkce_middleware.__all__:
        assert getattr(pkce_middleware, name).__module__ == "pkce_middleware"
