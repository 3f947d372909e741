"""Reading sources: every kind, every split mode, and every kind of bad input."""

import gzip
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lanternlm.data.sources import ReadConfig, SourceStats, iter_documents, parse_source
from lanternlm.errors import LanternError


def texts(spec, **options):
    return [d.text for d in iter_documents(str(spec), ReadConfig(**options))]


def test_parse_source_kinds(tmp_path):
    (tmp_path / "d").mkdir()
    assert parse_source(str(tmp_path / "d")).kind == "dir"
    assert parse_source("corpus/").kind == "dir"
    assert parse_source("a.txt").kind == "text"
    assert parse_source("a.md.gz").kind == "text"
    assert parse_source("web.JSONL").kind == "jsonl"
    assert parse_source("x.parquet").kind == "parquet"
    assert parse_source("parquet:x.data") == parse_source("parquet:x.data")
    assert parse_source("parquet:x.data").location == "x.data"
    assert parse_source("builtin:python-docs").location == "python-docs"
    spec = parse_source("https://h/f.txt#sha256=abc")
    assert (spec.kind, spec.location, spec.sha256) == ("url", "https://h/f.txt", "abc")
    with pytest.raises(LanternError):
        parse_source("")


def test_text_split_modes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\nOne two.\nThree.\n\n\nFour five.\n\nSix.\n")
    assert texts(path) == ["\nOne two.\nThree.\n\n\nFour five.\n\nSix.\n"]
    assert texts(path, text_split="paragraph") == ["One two.\nThree.\n", "Four five.\n", "Six.\n"]
    # chunks: paragraphs packed until >= 12 characters; the short tail joins the last chunk
    assert texts(path, text_split="chunk", chunk_chars=12) == ["One two.\nThree.\n", "Four five.\n\nSix.\n"]
    sep = tmp_path / "s.txt"
    sep.write_text("Once.\n<|endoftext|>\nTwice.\nMore.\n<|endoftext|>\n")
    assert texts(sep, text_split="sep:<|endoftext|>") == ["Once.\n", "Twice.\nMore.\n"]
    with pytest.raises(LanternError, match="text_split"):
        texts(sep, text_split="sentences")


def test_origins_name_file_and_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("A.\n\nB.\n")
    origins = [d.origin for d in iter_documents(str(path), ReadConfig(text_split="paragraph"))]
    assert origins == [f"{path}:1", f"{path}:3"]


def test_bom_and_gzip(tmp_path):
    path = tmp_path / "a.txt.gz"
    with gzip.open(path, "wb") as fh:
        fh.write("\ufeffcafé\n".encode("utf-8"))
    assert texts(path) == ["café\n"]


def test_non_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(LanternError, match=r"bad\.txt:2: not valid UTF-8 \(byte 0xff at column 8\)"):
        texts(path)
    assert texts(path, encoding_errors="replace") == ["fine line\nsecond \ufffd line\n"]


def test_empty_file_is_skipped_with_a_warning_and_recorded(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "full.txt").write_text("words\n")
    stats = SourceStats(str(tmp_path), "dir")
    with caplog.at_level(logging.WARNING, logger="lanternlm"):
        docs = list(iter_documents(str(tmp_path), stats=stats))
    assert [d.text for d in docs] == ["words\n"]
    assert stats.empty_files == [str(tmp_path / "empty.txt")]
    assert (stats.files, stats.documents, stats.bytes) == (2, 1, 6)
    assert "empty.txt: empty file" in caplog.text


def test_folder_reads_sorted_known_files_and_skips_others(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.md").write_text("two")
    (tmp_path / "1.txt").write_text("one")
    (tmp_path / "c.jsonl").write_text('{"text": "three"}\n')
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("secret")
    stats = SourceStats("x", "dir")
    assert [d.text for d in iter_documents(str(tmp_path), stats=stats)] == ["one", "two", "three"]
    assert stats.skipped_files == [str(tmp_path / "image.png")]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(LanternError, match="no .txt"):
        texts(tmp_path / "nothing")


def test_jsonl_reads_field_and_skips_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta"}\n')
    assert texts(path) == ["alpha", "beta"]
    path.write_text('{"body": "alpha"}\n')
    assert texts(path, text_field="body") == ["alpha"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": "unterminated\n', r"a\.jsonl:2: malformed JSON"),
    ('{"text": "ok"}\n["a list"]\n', r"a\.jsonl:2: expected a JSON object, got list"),
    ('{"text": "ok"}\n{"body": "x"}\n', r"a\.jsonl:2: no field 'text' \(fields: 'body'\)"),
    ('{"text": 42}\n', r"a\.jsonl:1: field 'text' is int, expected a string"),
])
def test_jsonl_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_text(content)
    with pytest.raises(LanternError, match=message):
        texts(path)


def test_parquet_streams_batches(tmp_path):
    path = tmp_path / "web.parquet"
    rows = [f"document number {i}" for i in range(2500)]
    pq.write_table(pa.table({"id": list(range(2500)), "text": rows}), path, row_group_size=700)
    docs = list(iter_documents(str(path)))
    assert [d.text for d in docs] == rows
    assert docs[2499].origin == f"{path} row 2499"


def test_parquet_errors(tmp_path):
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table({"content": ["a", "b"]}), path)
    with pytest.raises(LanternError, match=r"web\.parquet: no column 'text' \(columns: 'content'\)"):
        texts(path)
    assert texts(path, text_column="content") == ["a", "b"]
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(LanternError, match="has type int64, expected strings"):
        texts(path)
    pq.write_table(pa.table({"text": ["a", None]}), path)
    with pytest.raises(LanternError, match=r"row 1 \(0-based\): column 'text' is null"):
        texts(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LanternError, match="not a readable Parquet file"):
        texts(path)


def test_missing_paths(tmp_path):
    with pytest.raises(LanternError, match="no such file"):
        texts(tmp_path / "nope.txt")
    with pytest.raises(LanternError, match="no such folder"):
        texts("dir:" + str(tmp_path / "nope"))
    with pytest.raises(LanternError, match="unknown built-in corpus"):
        texts("builtin:nope")
