"""x-request-id: a client's plausible id is kept, anything else replaced (pure)."""

import pytest

from server.access import request_id


@pytest.mark.parametrize("given", [b"abc-123", b"req_7f3a", b"x" * 128])
def test_plausible_ids_are_kept(given):
    assert request_id(given) == given


@pytest.mark.parametrize("given", [None, b"", b"x" * 129, b"has space", b"new\nline", b"\xff"])
def test_others_are_replaced(given):
    made = request_id(given)
    assert made != given and len(made) == 32 and made.isalnum()
