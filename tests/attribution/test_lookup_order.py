"""`lookups_independent`: when the batches of one call may be looked up at once rather than in turn."""

from __future__ import annotations

from button_sidecar import Transformer, TransformResult
from button_sidecar.pipeline.ingest import lookups_independent

from tests.attribution.helpers import IDFA, deep_link, now_ms, user_batch
from tests.pipeline.helpers import purchase


def mapped(*raws: bytes) -> list[TransformResult]:
    return Transformer().transform_many(list(raws), now_ms())


def test_batches_of_other_users_are_independent() -> None:
    now = now_ms()
    assert lookups_independent(
        mapped(
            user_batch(deep_link("srctok-1", now), mpid=1),
            user_batch(purchase("o-2"), mpid=2),
            user_batch(purchase("o-1-own-batch"), deep_link("srctok-3", now), mpid=3),
        )
    )
    assert lookups_independent([])


def test_a_purchase_after_a_link_of_the_same_user_in_an_earlier_batch_is_not() -> None:
    now = now_ms()
    link = user_batch(deep_link("srctok-1", now), mpid=1, idfa=IDFA)
    # The same user by another key (the device): the link's token is among those the purchase may take.
    assert not lookups_independent(mapped(link, user_batch(purchase("o-1"), mpid=9, idfa=IDFA)))
    assert not lookups_independent(mapped(link, user_batch(purchase("o-2"), mpid=1)))
    # The other way round, or a later batch that looks nothing up, is independent.
    assert lookups_independent(mapped(user_batch(purchase("o-3"), mpid=1), link))
    assert lookups_independent(mapped(link, user_batch(deep_link("srctok-2", now), mpid=1)))
