"""Tokens: strong and URL-safe; masked wherever they appear, registered or not."""

from __future__ import annotations

import re

from colabtunnel import redact

URL_SAFE = re.compile(r"^[A-Za-z0-9_\-]+$")


def test_new_token_is_long_and_url_safe() -> None:
    token = redact.new_token()
    assert len(token) >= 43
    assert URL_SAFE.match(token), token


def test_new_token_differs_each_call() -> None:
    tokens = {redact.new_token() for _ in range(200)}
    assert len(tokens) == 200


def test_new_token_is_registered_for_masking() -> None:
    token = redact.new_token()
    assert token not in redact.mask(f"JUPYTER_TOKEN={token} in env")
    assert token not in redact.mask(f'{{"token": "{token}"}}')


def test_mask_registered_secret_anywhere() -> None:
    secret = "s3cr3t-Value_For-Test-1234567890abcdefghijk"
    redact.register(secret)
    text = f"prefix{secret}suffix; again: {secret}\nline2 {secret}"
    masked = redact.mask(text)
    assert secret not in masked
    assert masked == "prefix***suffix; again: ***\nline2 ***"


def test_mask_unregistered_token_query_value() -> None:
    masked = redact.mask(
        "Jupyter Server is running at: http://127.0.0.1:8888/tree?token=deadbeefcafe0123456789 ok"
    )
    assert "deadbeefcafe0123456789" not in masked
    assert "token=***" in masked
    assert masked.endswith(" ok")


def test_mask_token_query_after_ampersand_and_in_several_urls() -> None:
    text = (
        "http://localhost:8890/?a=1&token=Abc-_.~%2Fxyz&b=2 and "
        "http://localhost:8891/lab?token=ZZZ999"
    )
    masked = redact.mask(text)
    assert "Abc" not in masked and "xyz" not in masked and "ZZZ999" not in masked
    assert masked.count("token=***") == 2
    assert "&b=2" in masked  # only the value is masked


def test_mask_leaves_other_text_alone() -> None:
    text = "nothing secret here: port 8888, tokenizer ready"
    assert redact.mask(text) == text


def test_register_ignores_empty_secret() -> None:
    redact.register("")
    assert redact.mask("abc") == "abc"
