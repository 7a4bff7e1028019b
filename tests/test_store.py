"""The results store: keys, generic flattening, round trips through a real SQLite file, load(),
filters, exports and figures."""

import json
import math
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import giantstep
from giantstep.cli import main
from giantstep.config import ConfigError, validate_config
from giantstep.plots import averaged_keys, plot_frame, theory_columns
from giantstep.store import (
    DIVERGED,
    FAILED,
    OK,
    Store,
    StoreError,
    export,
    flatten_result,
    library_version,
    load,
    run_key,
    select,
)

TINY = {
    "dim": 12,
    "width": 10,
    "train": {"steps": 2, "batch_size": 256, "residual": "y"},
    "readout": {"samples": 256, "ridge": [0.001, 0.1]},
    "test": {"samples": 256},
    "compute": {"block_size": 256},
}


def tiny(**changes):
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


@pytest.fixture(scope="module")
def result():
    return giantstep.run(tiny())


def test_key_is_the_resolved_config_and_version():
    config = validate_config(tiny())
    # Written out in full or left to defaults: the same resolved config, the same key.
    explicit = config.model_dump(mode="json")
    assert run_key(tiny()) == run_key(config) == run_key(explicit)
    assert len(run_key(config)) == 64
    assert run_key(tiny(seed=1)) != run_key(config)
    assert run_key(tiny(readout__ridge=[0.001])) != run_key(config)
    assert run_key(config, "0.0.0-other") != run_key(config, library_version())


def test_result_round_trip_and_load_columns(tmp_path, result):
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        key = store.add_result(result, sweep="s")
        assert key == run_key(result.config)
        assert store.status() == {key: OK}
        # WAL journal: readers do not block the sweep's writer.
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    frame = load(path)
    assert len(frame) == 1
    row = frame.iloc[0]
    # The config, flattened into dotted columns.
    assert row["seed"] == 0 and row["dim"] == 12 and row["train.batch_size"] == 256
    assert row["train.step_size.scale"] == 1.0 and row["compute.dtype"] == "float64"
    assert row["readout.ridge"] == (0.001, 0.1)
    assert row["status"] == OK and row["sweep"] == "s" and row["key"] == key
    # Scalars as metrics, exactly as the run returned them.
    assert row["step_size"] == result.step_size
    assert row["errors.1.test_error"] == result.errors[1].test_error
    assert row["alignment.2.update_cosine"] == result.alignment[2].update_cosine
    assert row["alignment.0.update_cosine"] is None or math.isnan(row["alignment.0.update_cosine"])
    assert row["predicted_update_cosine"] == result.predicted_update_cosine
    # Lists of numbers as arrays (np.save blobs).
    stored = row["alignment.1.direction_alignment"]
    assert isinstance(stored, np.ndarray)
    np.testing.assert_array_equal(stored, result.alignment[1].direction_alignment)
    assert "alignment.1.direction_alignment" not in load(path, arrays=False)


def test_new_result_fields_need_no_store_change(tmp_path, result):
    data = result.model_dump(mode="json")
    data["spectrum"] = {
        "singular_values": [3.0, 1.5, 1.0],
        "spikes": 1,
        "spike_alignment": [[0.9, 0.1], [0.2, 0.3]],
        "mean_spike": None,
    }
    data["alignment"][1]["subspace_eigenvalues"] = [0.5, 0.01]
    data["alignment"][1]["learned"] = [[1.0, 0.0]]
    data["alignment"][1]["predicted"] = []
    data["alignment"][1]["ragged"] = [[1.0], [1.0, 2.0]]
    data["alignment"][1]["with_none"] = [1.0, None]
    data["huge"] = math.inf
    metrics, arrays = flatten_result({k: v for k, v in data.items() if k != "config"})
    assert metrics["spectrum.spikes"] == 1 and metrics["spectrum.mean_spike"] is None
    assert arrays["spectrum.spike_alignment"].shape == (2, 2)
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        key = store.add_result(data)
        blobs = store.arrays(key)
    np.testing.assert_array_equal(blobs["spectrum.singular_values"], [3.0, 1.5, 1.0])
    np.testing.assert_array_equal(blobs["alignment.1.learned"], [[1.0, 0.0]])
    assert blobs["alignment.1.ragged"] == [[1.0], [1.0, 2.0]]  # kept as JSON
    assert blobs["alignment.1.with_none"] == [1.0, None]
    row = load(path).iloc[0]
    assert row["spectrum.spikes"] == 1 and row["huge"] == math.inf
    np.testing.assert_array_equal(row["alignment.1.subspace_eigenvalues"], [0.5, 0.01])
    assert row["alignment.1.predicted"].shape == (0,)


def test_failures_are_recorded_and_replaced(tmp_path, result):
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        key = store.add_failure(result.config, "boom", sweep="s")
        assert store.status() == {key: FAILED}
        assert store.add_failure(result.config, "diverged", diverged=True) == key
        assert store.status() == {key: DIVERGED}
        store.add_result(result)  # a rerun that succeeds replaces the row, never duplicates it
        assert store.status() == {key: OK} and len(store) == 1
        assert store.arrays(key)
    row = load(path).iloc[0]
    assert row["status"] == OK and row["error"] is None


def test_filters_and_exports(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        for seed in (0, 1):
            for n in (256, 512):
                store.add_result(giantstep.run(tiny(seed=seed, train__batch_size=n)))
        store.add_failure(tiny(seed=5), "ValueError: broken")
    frame = load(path)
    assert len(select(frame, ["seed=1"])) == 2
    assert len(select(frame, ["seed=1", "train.batch_size=512"])) == 1
    assert len(select(frame, ["status=failed"])) == 1
    assert len(select(frame, ["readout.ridge=[0.001, 0.1]"])) == 5
    assert len(select(frame, ["train.residual=y"])) == 5
    with pytest.raises(ConfigError, match="nosuch"):
        select(frame, ["nosuch=1"])
    with pytest.raises(ConfigError, match="key=value"):
        select(frame, ["seed"])

    ok = select(frame, ["status=ok"])
    csv = export(ok, tmp_path / "runs.csv", "csv")
    back = pd.read_csv(csv)
    assert len(back) == 4
    np.testing.assert_allclose(
        back["errors.0.test_error"].to_numpy(), ok["errors.0.test_error"].to_numpy(), rtol=1e-15
    )
    assert json.loads(back["alignment.1.direction_alignment"].iloc[0]) == pytest.approx(
        ok["alignment.1.direction_alignment"].iloc[0].tolist()
    )
    parquet = export(ok, tmp_path / "runs.parquet", "parquet")
    back = pd.read_parquet(parquet)
    assert sorted(back["seed"]) == [0, 0, 1, 1]
    assert back["errors.1.train_error"].tolist() == ok["errors.1.train_error"].tolist()
    # A column of mixed kinds (a caller's own, here) is written as text, lists as JSON; the
    # other columns keep their types.
    mixed = ok.assign(note=pd.Series(["x", 1.5, [1.0, 2.0], None], index=ok.index, dtype=object))
    back = pd.read_parquet(export(mixed, tmp_path / "mixed.parquet", "parquet"))
    assert back["note"].tolist()[:3] == ["x", "1.5", "[1.0, 2.0]"] and pd.isna(back["note"][3])
    assert back["errors.1.train_error"].tolist() == ok["errors.1.train_error"].tolist()

    # The same through the command line.
    runner = CliRunner()
    out = runner.invoke(main, ["results", str(path), "seed=0", "status=ok"])
    assert out.exit_code == 0, out.output
    assert "2 runs" in out.output
    out = runner.invoke(
        main,
        ["results", str(path), "train.batch_size=256", "--export", "csv", "--out", str(csv)],
    )
    assert out.exit_code == 0 and len(pd.read_csv(csv)) == 3  # two ok, the failed one
    # --columns chooses the exported columns too; --out without --export is refused (the runs
    # were listed and --out ignored).
    chosen = tmp_path / "chosen.csv"
    out = runner.invoke(main, ["results", str(path), "--export", "csv", "--columns",
                               "seed,errors.0.test_error", "--out", str(chosen)])  # fmt: skip
    assert out.exit_code == 0
    assert list(pd.read_csv(chosen).columns) == ["seed", "errors.0.test_error"]
    out = runner.invoke(main, ["results", str(path), "--out", str(chosen)])
    assert out.exit_code == 2 and "--export csv or --export parquet" in out.output
    assert "alignment.2.direction_alignment" in pd.read_csv(csv).columns
    out = runner.invoke(main, ["results", str(path), "bogus=3"])
    assert out.exit_code == 2 and "bogus" in out.output


def test_not_a_store_is_bad_input(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="junk.sqlite"):
        Store(junk)
    out = CliRunner().invoke(main, ["results", str(tmp_path / "missing.sqlite")])
    assert out.exit_code == 2 and "missing.sqlite" in out.output


def test_plot_mean_spread_and_theory_overlay(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        for seed in (0, 1, 2):
            for n in (256, 1024):
                store.add_result(giantstep.run(tiny(seed=seed, train__batch_size=n)))
    frame = load(path, arrays=False)
    assert theory_columns(frame.columns, "alignment.1.update_cosine") == ["predicted_update_cosine"]
    assert theory_columns(frame.columns, "errors.0.test_error") == []
    # A prediction per variant, for a metric inside a list of the result.
    columns = [
        "errors.0.test_error",
        "predicted_errors.spiked.errors.0.test_error",
        "predicted_errors.random_features.errors.0.test_error",
        "predicted_errors.spiked.errors.1.test_error",
        "predicted_errors.spiked.reason",
    ]
    assert theory_columns(columns, "errors.0.test_error") == [
        "predicted_errors.random_features.errors.0.test_error",
        "predicted_errors.spiked.errors.0.test_error",
    ]
    written = plot_frame(
        frame, "train.batch_size", "alignment.1.update_cosine", out=tmp_path / "f.png"
    )
    assert written.stat().st_size > 1000
    out = CliRunner().invoke(
        main,
        [
            "plot",
            str(path),
            "--x",
            "train.batch_size",
            "--y",
            "errors.0.test_error",
            "--hue",
            "seed",
            "--out",
            str(tmp_path / "g.pdf"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")
    # A categorical x (here the seed as text would do; the activation is the usual one).
    labelled = frame.assign(activation=frame["seed"].map({0: "relu", 1: "tanh", 2: "erf"}))
    assert plot_frame(labelled, "activation", "errors.0.test_error", out=tmp_path / "c.svg")
    # What a point's mean is over, named in the title: the seeds; with the activation varied
    # but not plotted, the activations too (it was averaged silently).
    assert averaged_keys(frame, "train.batch_size") == ["seed"]
    assert averaged_keys(frame, "train.batch_size", hue="seed") == []
    assert averaged_keys(labelled, "train.batch_size") == ["seed", "activation"]
    assert averaged_keys(labelled, "activation") == ["train.batch_size"]  # one seed each
    out = CliRunner().invoke(
        main, ["plot", str(path), "--x", "train.batch_size", "--y", "nosuch.metric"]
    )
    assert out.exit_code == 2 and "nosuch.metric" in out.output
    # A log axis cannot show x ≤ 0: refused, naming the option (those runs were dropped).
    assert plot_frame(frame, "train.batch_size", "errors.0.test_error", logx=True,
                      out=tmp_path / "l.png")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--logx: 2 run\(s\) have seed ≤ 0"):
        plot_frame(frame, "seed", "errors.0.test_error", logx=True, out=tmp_path / "s.png")


def test_store_rows_are_whole_for_a_concurrent_reader(tmp_path, result):
    """A reader sees a run with all its arrays or not at all (one transaction per run)."""
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        reader = sqlite3.connect(path)
        store.add_result(result)
        runs = reader.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        arrays = reader.execute("SELECT COUNT(*) FROM arrays").fetchone()[0]
        assert runs == 1 and arrays == len(flatten_result(result.model_dump(exclude={"config"}))[1])
        reader.close()


def test_an_export_onto_the_store_itself_is_refused_and_a_damaged_row_is_named(tmp_path):
    """`results x.sqlite --export csv --out x.sqlite` replaced the store with the CSV (exit 0);
    text SQLite cannot decode, or a damaged npy header, was an 'internal error' (exit 1)."""
    store = tmp_path / "x.sqlite"
    with Store(store) as s:
        s.add_result(giantstep.run({"dim": 12, "width": 8, "train": {"batch_size": 256},
                             "readout": {"samples": 256}, "test": {"samples": 256}}))  # fmt: skip
    before = store.read_bytes()
    for out in (store, tmp_path / "x.sqlite-wal"):
        result = CliRunner().invoke(main, ["results", str(store), "--export", "csv", "--out",
                                           str(out)])  # fmt: skip
        assert result.exit_code == 2 and "is the results store" in result.output
    assert store.read_bytes() == before
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(before)
    with sqlite3.connect(damaged) as conn:
        conn.execute("UPDATE runs SET metrics = CAST(x'7bff7d' AS TEXT)")
    result = CliRunner().invoke(main, ["results", str(damaged)])
    assert result.exit_code == 2 and "the results store is corrupted" in result.output
    with sqlite3.connect(damaged) as conn:
        key, name, data = conn.execute(
            "SELECT key, name, data FROM arrays WHERE format = 'npy' LIMIT 1"
        ).fetchone()
        data = bytearray(data)
        data[data.index(b"}")] = ord(" ")
        conn.execute(
            "UPDATE arrays SET data = ? WHERE key = ? AND name = ?", (bytes(data), key, name)
        )
        conn.execute("UPDATE runs SET metrics = '{}'")
    result = CliRunner().invoke(main, ["results", str(damaged), "--export", "csv", "--out",
                                       str(tmp_path / "d.csv")])  # fmt: skip
    assert result.exit_code == 2 and f"its {name} cannot be read" in result.output


def test_a_second_store_in_the_process_keeps_the_writers_locks(tmp_path):
    """A second Store in a process that writes one (a reader beside a sweep, the sweep's claim
    renewer) read the file's header with open()/close(), which drops every POSIX lock the
    process holds on it; another process's connection, closing, then took the WAL for unused
    and deleted it, and the writer's next claims and runs went into a deleted file: seen by no
    reader, lost if the writer was killed."""
    path = tmp_path / "s.sqlite"
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT COUNT(*) FROM claims').fetchone()[0]); c.close()"
    )

    def seen_outside() -> int:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return int(out.stdout)

    with Store(path, owner="writer") as writer:
        with Store(path, readonly=True) as reader:
            reader.close()  # closed twice (here and by the with): uncounted once
        Store(path, owner="second").close()
        Store(path, readonly=True)  # collected unclosed
        assert seen_outside() == 0
        writer.claim("a")
        writer.claim("b")
        assert seen_outside() == 2
    with Store(path, readonly=True) as reader:  # closed and reopened: checked again
        assert len(reader.claims()) == 2


def test_an_empty_store_loads_with_its_columns_and_exports_a_header(tmp_path):
    path = tmp_path / "empty.sqlite"
    Store(path).close()
    frame = load(path)
    assert frame.empty
    assert list(frame.columns[:6]) == ["key", "status", "error", "version", "sweep", "finished"]
    assert {"seed", "train.batch_size", "readout.ridge"} <= set(frame.columns)
    assert select(frame, ["seed=0"]).empty  # a config key is a column: nothing matches
    out = CliRunner().invoke(
        main, ["results", str(path), "seed=0", "--export", "csv", "--out", str(tmp_path / "e.csv")]
    )
    assert out.exit_code == 0, out.output
    back = pd.read_csv(tmp_path / "e.csv")
    assert back.empty and "train.batch_size" in back.columns
