"""PHOENIX_LAKE_URI is validated: a malformed URI fails naming the variable instead of becoming a local folder."""

from pathlib import Path

import pytest

from phoenix_assets.defs.resources import LakeResource


@pytest.mark.parametrize("bad", ["s3:/bucket/x", "s3:bucket", "s3://", "s3:///", "gs://", "ftp://host/x"])
def test_malformed_lake_uri_fails_naming_the_variable_and_creates_nothing(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOENIX_LAKE_URI", bad)
    with pytest.raises(ValueError, match="PHOENIX_LAKE_URI"):
        LakeResource().lake()
    assert list(tmp_path.iterdir()) == []


def test_resource_config_is_named_when_it_is_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"LakeResource\.uri='s3:/b'"):
        LakeResource(uri="s3:/b").lake()


@pytest.mark.parametrize("good", ["s3://b/p", "s3://b", "s3a://bucket/deep/prefix/"])
def test_object_store_roots_are_accepted(good: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_LAKE_URI", good)
    assert LakeResource().lake().root == good.rstrip("/")


def test_local_and_file_roots_resolve_to_an_absolute_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOENIX_LAKE_URI", "rel/lake")
    assert LakeResource().lake().root == str(tmp_path / "rel" / "lake")
    assert (tmp_path / "rel" / "lake").is_dir()
    monkeypatch.setenv("PHOENIX_LAKE_URI", f"file://{tmp_path}/other")
    assert LakeResource().lake().root == str(tmp_path / "other")
