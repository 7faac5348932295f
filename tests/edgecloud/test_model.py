"""``ModelRepository``: models by name and version, the newest one when no version is named."""

from __future__ import annotations

import pytest

from edgecloud.errors import NotFound
from edgecloud.model import Model, ModelRepository
from edgecloud.types import ModelMetadata


class Named(Model):
    def __init__(self, name: str, version: str):
        self.metadata = ModelMetadata(name, (version,), "test", (), ())

    async def infer(self, request):
        raise AssertionError("not run here")


def test_no_version_means_the_newest_numerically_whatever_order_they_were_added_in():
    ten, nine, label = Named("m", "10"), Named("m", "9"), Named("m", "beta")
    for order in ([ten, nine, label], [label, nine, ten], [nine, label, ten]):
        repository = ModelRepository(list(order))
        assert repository.get("m") is ten
        assert repository.get("m", "9") is nine and repository.get("m", "beta") is label


def test_a_newer_version_added_later_becomes_the_default_and_names_stay_apart():
    repository = ModelRepository([Named("m", "1"), Named("other", "7")])
    newer = Named("m", "2")
    repository.add(newer)
    assert repository.get("m") is newer and repository.get("other").version == "7"
    assert sorted((m.name, m.version) for m in repository.all()) == [("m", "1"), ("m", "2"), ("other", "7")]


def test_unknown_names_and_versions_are_not_found_naming_the_field():
    repository = ModelRepository([Named("m", "1")])
    with pytest.raises(NotFound) as unknown:
        repository.get("nope")
    assert unknown.value.message.startswith("model_name")
    with pytest.raises(NotFound) as version:
        repository.get("m", "3")
    assert version.value.message.startswith("model_version") and "['1']" in version.value.message
    with pytest.raises(NotFound):
        ModelRepository().get("m")
