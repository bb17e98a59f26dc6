"""Per-series chunks against one row per reading, measured before they are built
(issue 7, acceptance 3; docs/SCALING.md, "An append-only log for new readings").

The store writer's merge moves a slice of new readings into the series-keyed
table: at 300,000 readings/s over 2,000 series a slice carries ~20 readings of
each series, and the profile says the time goes to one B-tree insert per
reading (seek, insert, page splits). This compares, on the server's pragmas
(WAL, 64 MiB cache, synchronous=NORMAL as the merge's own transactions):

- rows:   INSERT OR IGNORE INTO readings(series, t, v) SELECT ... ORDER BY
          series, t (all in SQLite's C, as the server does);
- chunks: the same readings read sorted, packed per series into one blob
          (int64 time, float64 value per reading) and inserted as one row
          (series, first t, count, blob) per series.

Both tables start with the same history (2,000 series x 2,000 readings).
Python adds its own cost to the chunks (grouping and packing each reading in
the interpreter, ~0.3-0.5 us a reading), none to the rows, so the chunks'
figure is an upper bound. Run: `python3 docs/profiles/chunk_experiment.py`.
"""
import os
import sqlite3
import struct
import time

SERIES = 2000
HISTORY = 2000  # readings per series already stored
PER_SLICE = 20  # readings per series per merged slice
SLICES = 20


def fresh(path):
    for ext in ("", "-wal", "-shm"):
        try:
            os.remove(path + ext)
        except FileNotFoundError:
            pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA wal_autocheckpoint=4000")
    c.execute("PRAGMA cache_size=-65536")
    c.execute("PRAGMA temp_store=MEMORY")
    c.execute(
        "CREATE TABLE log(series INTEGER NOT NULL, t INTEGER NOT NULL, v REAL NOT NULL)"
    )
    return c


def fill_log(c, t0):
    c.execute("DELETE FROM log")
    c.executemany(
        "INSERT INTO log VALUES (?,?,?)",
        ((s, t0 + k, 1.5) for k in range(PER_SLICE) for s in range(SERIES)),
    )


def run_rows():
    c = fresh("/tmp/chunkexp-rows.db")
    c.execute(
        "CREATE TABLE readings(series INTEGER NOT NULL, t INTEGER NOT NULL, "
        "v REAL NOT NULL, PRIMARY KEY(series, t)) WITHOUT ROWID"
    )
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO readings VALUES (?,?,?)",
        ((s, t, 1.0) for s in range(SERIES) for t in range(HISTORY)),
    )
    c.execute("COMMIT")
    cpu = 0.0
    for i in range(SLICES):
        fill_log(c, HISTORY + i * PER_SLICE)
        a = time.process_time()
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT OR IGNORE INTO readings(series, t, v) "
            "SELECT series, t, v FROM log ORDER BY series, t"
        )
        c.execute("COMMIT")
        cpu += time.process_time() - a
    return cpu / (SLICES * SERIES * PER_SLICE)


def pack(points):
    return b"".join(struct.pack("<qd", t, v) for t, v in points)


def run_chunks():
    c = fresh("/tmp/chunkexp-chunks.db")
    c.execute(
        "CREATE TABLE chunks(series INTEGER NOT NULL, t0 INTEGER NOT NULL, "
        "n INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, t0)) WITHOUT ROWID"
    )
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO chunks VALUES (?,?,?,?)",
        (
            (s, t0, PER_SLICE, pack((t, 1.0) for t in range(t0, t0 + PER_SLICE)))
            for s in range(SERIES)
            for t0 in range(0, HISTORY, PER_SLICE)
        ),
    )
    c.execute("COMMIT")
    cpu = 0.0
    write = 0.0
    for i in range(SLICES):
        fill_log(c, HISTORY + i * PER_SLICE)
        a = time.process_time()
        c.execute("BEGIN IMMEDIATE")
        rows = c.execute("SELECT series, t, v FROM log ORDER BY series, t").fetchall()
        out = []
        start = 0
        for j in range(1, len(rows) + 1):
            if j == len(rows) or rows[j][0] != rows[start][0]:
                points = [(t, v) for _, t, v in rows[start:j]]
                out.append((rows[start][0], points[0][0], len(points), pack(points)))
                start = j
        b = time.process_time()
        c.executemany("INSERT OR IGNORE INTO chunks VALUES (?,?,?,?)", out)
        c.execute("COMMIT")
        write += time.process_time() - b
        cpu += time.process_time() - a
    n = SLICES * SERIES * PER_SLICE
    return cpu / n, write / n


for _ in range(2):
    rows = run_rows()
    chunks, write = run_chunks()
    print(
        f"merge CPU per reading: rows {rows * 1e6:.2f} us; "
        f"chunks {chunks * 1e6:.2f} us with Python's reading and packing, "
        f"{write * 1e6:.2f} us of it the chunks' insert and commit "
        f"(chunks/rows {chunks / rows:.2f}, insert and commit alone {write / rows:.2f})"
    )
