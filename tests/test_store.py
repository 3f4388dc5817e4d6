"""Representation store: round trips, atomic resumable writing, and every corruption case."""
import json
import os
import shutil

import numpy as np
import pytest

from speechinterp import store


def rows(n):
    return [{"utt_id": f"u{i}", "path": f"a/{i}.wav", "gender": "f" if i % 2 else "m",
             "speaker": f"s{i % 3}"} for i in range(n)]


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 7)).astype(np.float32)]
    d = str(tmp_path / "s")
    store.write_store(d, "enc", ["cnn", "layer_1"], arrays, rows(6))
    return d, arrays


def test_round_trip_is_memory_mapped(good):
    d, arrays = good
    s = store.open_store(d)
    assert s.layer_names == ["cnn", "layer_1"] and s.dims == [4, 7] and len(s) == 6
    for k, a in enumerate(arrays):
        got = s.layer(k)
        assert isinstance(got, np.memmap)
        np.testing.assert_array_equal(got, a)
    assert s.column("gender") == [r["gender"] for r in rows(6)]
    meta = json.load(open(os.path.join(d, "meta.json")))
    assert meta["version"] == 1 and meta["pooling"] == "mean"
    assert meta["layers"] == [{"name": "cnn", "dim": 4}, {"name": "layer_1", "dim": 7}]


def test_float16_storage(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    s = store.write_store(str(tmp_path / "h"), "enc", ["x"], [a], rows(3), dtype="float16")
    assert s.layer(0).dtype == np.float16
    np.testing.assert_array_equal(s.layer(0), a.astype(np.float16))


def test_chunked_resume_gives_identical_store(tmp_path):
    rng = np.random.default_rng(1)
    data = [rng.normal(size=(10, 3)).astype(np.float32)]
    full = str(tmp_path / "full")
    store.write_store(full, "enc", ["x"], data, rows(10))
    part = str(tmp_path / "part")
    w = store.StoreWriter(part, "enc", [("x", 3)], rows(10))
    w.write_chunk(0, [data[0][:4]])
    assert not os.path.exists(os.path.join(part, "meta.json"))
    with pytest.raises(store.StoreError, match="unfinished extraction"):
        store.open_store(part)
    # a new writer (the resumed run) sees the committed rows and continues
    w2 = store.StoreWriter(part, "enc", [("x", 3)], rows(10))
    assert w2.done_rows() == 4
    with pytest.raises(store.StoreError, match="only 4 of 10 rows"):
        w2.finalize()
    w2.write_chunk(4, [data[0][4:]])
    w2.finalize()
    for f in ("layer_0.npy", "utterances.csv"):
        assert open(os.path.join(full, f), "rb").read() == open(os.path.join(part, f), "rb").read()
    assert not os.path.exists(os.path.join(part, ".partial"))
    assert store.StoreWriter(part, "enc", [("x", 3)], rows(10)).done_rows() == 10


def test_skipped_rows_are_dropped_from_store(tmp_path):
    d = str(tmp_path / "s")
    w = store.StoreWriter(d, "enc", [("x", 2)], rows(5))
    w.write_chunk(0, [np.ones((2, 2))], skipped=[1])
    w.write_chunk(3, [np.zeros((1, 2))], skipped=[4])
    assert w.skipped_rows() == [1, 4]
    s = w.finalize()
    assert s.column("utt_id") == ["u0", "u2", "u3"]


def test_resume_with_other_manifest_is_refused(tmp_path):
    d = str(tmp_path / "s")
    store.StoreWriter(d, "enc", [("x", 2)], rows(5)).write_chunk(0, [np.ones((1, 2))])
    with pytest.raises(store.StoreError, match="different encoder"):
        store.StoreWriter(d, "other", [("x", 2)], rows(5))
    with pytest.raises(store.StoreError, match="different manifest"):
        store.StoreWriter(d, "enc", [("x", 2)], rows(6))


def test_bad_chunks_are_refused(tmp_path):
    w = store.StoreWriter(str(tmp_path / "s"), "enc", [("x", 2)], rows(5))
    with pytest.raises(store.StoreError, match="expected \\(2, 2\\)"):
        w.write_chunk(0, [np.ones((2, 3))])
    with pytest.raises(store.StoreError, match="non-finite"):
        w.write_chunk(0, [np.array([[1.0, np.nan]])])
    with pytest.raises(store.StoreError, match="outside the manifest"):
        w.write_chunk(4, [np.ones((2, 2))])


def corrupt(d, how):
    if how == "no_meta":
        os.remove(os.path.join(d, "meta.json"))
    elif how == "bad_json":
        open(os.path.join(d, "meta.json"), "w").write("{not json")
    elif how == "meta_key":
        m = json.load(open(os.path.join(d, "meta.json"))); del m["layers"]
        json.dump(m, open(os.path.join(d, "meta.json"), "w"))
    elif how == "version":
        m = json.load(open(os.path.join(d, "meta.json"))); m["version"] = 9
        json.dump(m, open(os.path.join(d, "meta.json"), "w"))
    elif how == "no_csv":
        os.remove(os.path.join(d, "utterances.csv"))
    elif how == "no_layer":
        os.remove(os.path.join(d, "layer_1.npy"))
    elif how == "rows":
        np.save(os.path.join(d, "layer_1.npy"), np.zeros((5, 7), np.float32))
    elif how == "dim":
        np.save(os.path.join(d, "layer_0.npy"), np.zeros((6, 5), np.float32))
    elif how == "dtype":
        np.save(os.path.join(d, "layer_0.npy"), np.zeros((6, 4), np.int64))
    elif how == "ndim":
        np.save(os.path.join(d, "layer_0.npy"), np.zeros((6, 4, 1), np.float32))
    elif how == "garbage":
        open(os.path.join(d, "layer_0.npy"), "wb").write(b"garbage")
    elif how == "extra":
        np.save(os.path.join(d, "layer_5.npy"), np.zeros((6, 4), np.float32))
    elif how == "dup":
        lines = open(os.path.join(d, "utterances.csv")).read().splitlines()
        lines[2] = lines[1]
        open(os.path.join(d, "utterances.csv"), "w").write("\n".join(lines) + "\n")
    elif how in ("no_dim", "dim_str"):
        m = json.load(open(os.path.join(d, "meta.json")))
        if how == "no_dim":
            del m["layers"][1]["dim"]
        else:
            m["layers"][1]["dim"] = "7"
        json.dump(m, open(os.path.join(d, "meta.json"), "w"))
    elif how == "meta_dtype":
        m = json.load(open(os.path.join(d, "meta.json"))); m["dtype"] = "float16"
        json.dump(m, open(os.path.join(d, "meta.json"), "w"))
    elif how in ("nan", "inf"):
        a = np.load(os.path.join(d, "layer_1.npy"))
        a[4, 2] = np.nan if how == "nan" else -np.inf
        a[5, 0] = np.nan
        np.save(os.path.join(d, "layer_1.npy"), a)
    elif how in ("split_typo", "split_mixed"):
        lines = open(os.path.join(d, "utterances.csv")).read().splitlines()
        lines[0] += ",split"
        for i in range(1, len(lines)):
            lines[i] += "," + ["train", "dev", "test"][i % 3]
        lines[4] = lines[4].rsplit(",", 1)[0] + ("," if how == "split_mixed" else ",tset")
        open(os.path.join(d, "utterances.csv"), "w").write("\n".join(lines) + "\n")
    elif how == "extra_field":
        lines = open(os.path.join(d, "utterances.csv")).read().splitlines()
        lines[3] += ",x"
        open(os.path.join(d, "utterances.csv"), "w").write("\n".join(lines) + "\n")
    elif how == "columns":
        lines = open(os.path.join(d, "utterances.csv")).read().splitlines()
        lines[0] = lines[0].replace("utt_id", "id")
        open(os.path.join(d, "utterances.csv"), "w").write("\n".join(lines) + "\n")


@pytest.mark.parametrize("how,message", [
    ("no_meta", "missing meta.json"), ("bad_json", "not valid JSON"),
    ("meta_key", "lacks key 'layers'"), ("version", "version 9"),
    ("no_csv", "missing utterances.csv"), ("no_layer", "missing layer_1.npy"),
    ("rows", "layer_1.npy has 5 rows but utterances.csv has 6"),
    ("dim", "layer_0.npy has dim 5 but meta.json says 4"), ("dtype", "dtype int64"),
    ("ndim", "expected 2-D"), ("garbage", "layer_0.npy is unreadable"),
    ("extra", "layer_5.npy"), ("dup", "repeats utt_id 'u0' \\(lines 2 and 3\\)"),
    ("columns", "utt_id and path"),
    ("no_dim", "layers\\[1\\] \\('layer_1'\\) lacks 'dim'"), ("dim_str", "has dim '7'"),
    ("meta_dtype", "layer_0.npy has dtype float32 but meta.json says float16"),
    ("nan", "layer_1.npy \\(layer 'layer_1'\\): 2 cell\\(s\\) in 2 row\\(s\\), first at row 4 "
            "\\(utt_id 'u4'\\)"),
    ("inf", "non-finite.*first at row 4"),
    ("split_typo", "utterances.csv: 1 row\\(s\\) with an unknown split value \\(line 5: 'tset'\\)"),
    ("split_mixed", "1 of 6 rows have an empty split \\(lines 5\\)"),
    ("extra_field", "utterances.csv:4: 5 fields, the header has 4"),
])
def test_every_corruption_names_the_culprit(good, how, message):
    d, _ = good
    corrupt(d, how)
    with pytest.raises(store.StoreError, match=message):
        store.validate(d)


def test_missing_store(tmp_path):
    with pytest.raises(store.StoreError, match="does not exist"):
        store.open_store(str(tmp_path / "nope"))


def test_unknown_column_named(good):
    s = store.open_store(good[0])
    with pytest.raises(store.StoreError, match="no column 'accent'"):
        s.column("accent")


def test_finiteness_is_checked_in_blocks(tmp_path):
    a = np.zeros((50, 3), np.float32)
    a[37, 1] = np.nan
    a[41, 0] = np.inf
    assert store.check_finite(a, block_bytes=24) == (37, 2, 2)   # two rows per block
    assert store.check_finite(np.full((4, 2), 3e38, np.float32)) is None  # sum overflows only
    assert store.check_finite(np.zeros((0, 3), np.float16)) is None


def test_empty_split_everywhere_is_no_split(good):
    d, _ = good
    lines = open(os.path.join(d, "utterances.csv")).read().splitlines()
    lines = [lines[0] + ",split"] + [l + "," for l in lines[1:]]
    open(os.path.join(d, "utterances.csv"), "w").write("\n".join(lines) + "\n")
    assert store.open_store(d).column("split") == [""] * 6


def test_layer_by_name(good):
    d, arrays = good
    s = store.open_store(d)
    np.testing.assert_array_equal(s.layer("layer_1"), arrays[1])
    with pytest.raises(store.StoreError, match="no layer 'layer_9'; layers: \\['cnn', 'layer_1'\\]"):
        s.layer("layer_9")


def test_finished_store_of_other_inputs_is_refused(good):
    d, arrays = good
    with pytest.raises(store.StoreError, match="finished store of another encoder"):
        store.StoreWriter(d, "other", [("cnn", 4), ("layer_1", 7)], rows(6))
    with pytest.raises(store.StoreError, match="finished store of another inputs \\(masks\\)"):
        store.StoreWriter(d, "enc", [("cnn", 4), ("layer_1", 7)], rows(6),
                          inputs={"masks": "abc"})
    with pytest.raises(store.StoreError, match="finished store of another manifest"):
        store.StoreWriter(d, "enc", [("cnn", 4), ("layer_1", 7)], rows(5))
    same = store.StoreWriter(d, "enc", [("cnn", 4), ("layer_1", 7)], rows(6))
    assert same.finished and same.done_rows() == 6
    with pytest.raises(store.StoreError, match="already finished"):   # a write after finish
        same.write_chunk(0, [a[:1] for a in arrays])


def test_masks_are_part_of_the_digest(tmp_path):
    d = str(tmp_path / "m")
    w = store.StoreWriter(d, "enc", [("x", 2)], rows(3), inputs={"masks": "aaa"})
    w.write_chunk(0, [np.ones((3, 2))])
    w.finalize()
    assert json.load(open(os.path.join(d, "meta.json")))["inputs"] == {"masks": "aaa"}
    assert store.StoreWriter(d, "enc", [("x", 2)], rows(3), inputs={"masks": "aaa"}).finished
    with pytest.raises(store.StoreError, match="inputs \\(masks\\)"):
        store.StoreWriter(d, "enc", [("x", 2)], rows(3), inputs={"masks": "bbb"})
    with pytest.raises(store.StoreError, match="inputs \\(masks\\)"):
        store.StoreWriter(d, "enc", [("x", 2)], rows(3))


def test_gaps_between_chunks(tmp_path):
    d = str(tmp_path / "g")
    w = store.StoreWriter(d, "enc", [("x", 2)], rows(10))
    w.write_chunk(0, [np.ones((4, 2))])
    with pytest.raises(store.StoreError, match="starts at row 6 but rows are written up to 4"):
        w.write_chunk(6, [np.ones((4, 2))])
    w.write_chunk(4, [np.ones((3, 2))])
    w.write_chunk(7, [np.ones((3, 2))])
    os.remove(os.path.join(d, ".partial", "chunk_000000004_000000007.npz"))  # a lost chunk
    w2 = store.StoreWriter(d, "enc", [("x", 2)], rows(10))
    assert w2.done_rows() == 4
    assert [c[:2] for c in w2._chunks()] == [(0, 4)]   # the chunk after the gap is redone
    with pytest.raises(store.StoreError, match="only 4 of 10 rows"):
        w2.finalize()
    w2.write_chunk(4, [np.full((6, 2), 2.0)])
    s = w2.finalize()
    np.testing.assert_array_equal(s.layer(0)[4:], 2.0)


def test_non_finite_chunk_names_the_vector(tmp_path):
    w = store.StoreWriter(str(tmp_path / "s"), "enc", [("x", 2)], rows(5))
    a = np.ones((3, 2))
    a[2, 1] = np.inf
    with pytest.raises(store.StoreError, match="1 vector\\(s\\), the first the chunk's vector 2"):
        w.write_chunk(0, [a])


def test_repeated_utt_ids_are_refused_before_writing(tmp_path):
    r = rows(4)
    r[3] = dict(r[3], utt_id="u1")
    d = tmp_path / "s"
    with pytest.raises(store.StoreError, match="utt_id 'u1' repeats \\(manifest rows 1 and 3\\)"):
        store.StoreWriter(str(d), "enc", [("x", 2)], r)
    assert not d.exists()
