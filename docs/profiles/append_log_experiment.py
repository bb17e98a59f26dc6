"""The store writer's next step, measured before it is built (issue 7, M5).

Paced ingest commits ~1,170 readings of ~1,170 different series at a time; with
readings keyed (series, t) each commit rewrites one B-tree leaf per series.
This compares that pattern with appending to an unindexed log merged into the
keyed table every 40 commits (~47,000 rows, sorted), on the server's pragmas
(WAL, synchronous=FULL, 64 MiB cache). Python's sqlite3 adds ~1 us per row
to both. Run: `python3 docs/profiles/append_log_experiment.py`.
"""
import sqlite3, os, time, random
def run(kind, commits=200, per=1170, nseries=2000):
    path=f"/tmp/sqlexp-{kind}.db"
    for ext in ("","-wal","-shm"):
        try: os.remove(path+ext)
        except FileNotFoundError: pass
    c=sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL"); c.execute("PRAGMA wal_autocheckpoint=4000"); c.execute("PRAGMA cache_size=-65536")
    c.execute("CREATE TABLE readings(series INTEGER NOT NULL, t INTEGER NOT NULL, v REAL NOT NULL, PRIMARY KEY(series,t)) WITHOUT ROWID")
    c.execute("CREATE TABLE log(series INTEGER NOT NULL, t INTEGER NOT NULL, v REAL NOT NULL)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO readings VALUES (?,?,?)", ((s,t,1.0) for s in range(nseries) for t in range(200)))
    c.execute("COMMIT")
    t=1000; rows=[]
    random.seed(1)
    cpu0=time.process_time(); wall0=time.time()
    table = "readings" if kind=="btree" else "log"
    for k in range(commits):
        batch=[]
        for s in random.sample(range(nseries), per):
            batch.append((s,t,2.0))
        t+=1
        c.execute("BEGIN IMMEDIATE")
        c.executemany(f"INSERT INTO {table} VALUES (?,?,?)", batch)
        c.execute("COMMIT")
        if kind=="log" and (k+1)%40==0:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO readings SELECT series,t,v FROM log ORDER BY series,t")
            c.execute("DELETE FROM log")
            c.execute("COMMIT")
    cpu=time.process_time()-cpu0; wall=time.time()-wall0
    n=commits*per
    print(f"{kind}: {cpu/n*1e6:.2f} us CPU/reading, {wall/n*1e6:.2f} us wall/reading")
for kind in ("btree","log","btree","log"):
    run(kind)
