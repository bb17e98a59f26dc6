//! The fuzzers' seed corpus (`fuzz/corpus/<target>/`) is made of real inputs:
//! packs the firmware core encodes, the topics devices use, a batch as the
//! gateway posts it, the configuration files the parts print, a segment and a
//! ledger written by the gateway's disk spool. This test makes them with the
//! real code and checks that the committed files are exactly those, so the
//! seeds cannot drift from the formats. `APR_FUZZ_SEEDS_WRITE=1` rewrites them.
//!
//! Seed files are named `seed-*`; inputs a fuzzer found crashing are kept
//! beside them as `crash-*` and are not touched here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apr_firmware::{Identity, Report, Sample, SampleValue};
use apr_gateway::spool::disk::{read_segment, scan_ledger};
use apr_gateway::spool::{DiskSpool, DiskSpoolOptions, Spool};
use apr_wire::ingest::{decode_batch, quarantine_excerpt, DeviceStatus, IngestBatch, IngestPack};
use apr_wire::metric::ValueKind;
use apr_wire::validate::{validate_pack, PackContext};
use apr_wire::Metric;

const APR: &str = "los-aromos";
const DEVICE: &str = "caseta";
/// 2025-11-25 10:00 UTC, the packs' first sample.
const T0: f64 = 1_764_064_800.0;
/// The fuzz targets validate against this arrival time (see senml_json.rs).
const RECEIVED_MS: i64 = 1_764_100_000_000;

type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, m) in Metric::ALL.into_iter().enumerate() {
        let (lo, hi) = m.range();
        // The totaliser's range is open-ended; a real one reads some m³.
        let hi = hi.min(1.0e6);
        let value = match m.kind() {
            ValueKind::Boolean => SampleValue::Boolean(i % 2 == 0),
            ValueKind::Number => SampleValue::Number(lo + (hi - lo) * 0.25 + 0.125),
        };
        for k in 0..2 {
            out.push(Sample {
                metric: m,
                time: T0 + 60.0 * k as f64 + 0.5 * i as f64,
                value,
            });
        }
    }
    out
}

/// Packs as the firmware core's report encoder writes them: one big pack,
/// and the same readings split over small packs.
fn firmware_packs() -> Vec<Vec<u8>> {
    let id = Identity::new(APR, DEVICE).expect("valid ids");
    let all = samples();
    let mut packs = Vec::new();
    for size in [apr_wire::MAX_PACK_BYTES, 256] {
        let mut report = Report::new(id, 0.0);
        let mut buf = vec![0u8; size];
        let mut rest = &all[..];
        while !rest.is_empty() {
            let (len, _, taken) = report.next_pack(&mut buf, rest).expect("encodes");
            packs.push(buf[..len].to_vec());
            rest = &rest[taken..];
        }
    }
    packs.truncate(5);
    packs
}

/// Packs a device may get wrong, one per refusal reason the gateway gives.
fn refused_packs() -> Vec<Vec<u8>> {
    [
        r#"[{"bn":"urn:apr:otra-apr:caseta:","bt":1764064800,"n":"chlorine","u":"mg/l","v":0.5}]"#,
        r#"[{"bn":"urn:apr:los-aromos:caseta:","bt":1764064800,"n":"nitrate","u":"mg/l","v":1},{"n":"chlorine","u":"ppm","v":0.5},{"n":"chlorine","u":"mg/l","v":99},{"n":"pump","vb":true,"t":99999999},{"n":"flow","u":"l/s","vs":"x"},{"n":"pressure","u":"mca","bv":1,"v":2.5,"vd":"AA"}]"#,
        r#"[{"bn":"urn:apr:los-aromos:caseta:","bt":12,"bu":"l/s","n":"flow","v":1.5,"t":-5}]"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// --- CBOR (RFC 8428 §6: integer labels), written here from the JSON packs.

fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

fn cbor_value(out: &mut Vec<u8>, v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            cbor_head(out, 3, s.len() as u64);
            out.extend(s.as_bytes());
        }
        serde_json::Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => cbor_head(out, 0, u),
            (None, Some(i)) => cbor_head(out, 1, (-1 - i) as u64),
            _ => {
                out.push(0xfb);
                out.extend(n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        },
        other => panic!("no SenML field holds {other}"),
    }
}

fn json_to_cbor(pack: &[u8]) -> Vec<u8> {
    let records: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(pack).expect("a JSON pack");
    let mut out = Vec::new();
    cbor_head(&mut out, 4, records.len() as u64);
    for r in &records {
        cbor_head(&mut out, 5, r.len() as u64);
        for (k, v) in r {
            let label: i64 = match k.as_str() {
                "bn" => -2,
                "bt" => -3,
                "bu" => -4,
                "bv" => -5,
                "n" => 0,
                "u" => 1,
                "v" => 2,
                "vs" => 3,
                "vb" => 4,
                "t" => 6,
                "vd" => 8,
                other => panic!("unknown SenML field {other}"),
            };
            if label < 0 {
                cbor_head(&mut out, 1, (-1 - label) as u64);
            } else {
                cbor_head(&mut out, 0, label as u64);
            }
            cbor_value(&mut out, v);
        }
    }
    out
}

fn ctx() -> PackContext<'static> {
    PackContext {
        apr: APR,
        device: DEVICE,
        received_ms: RECEIVED_MS,
        max_future_ms: 300_000,
    }
}

/// Packs as the gateway spools and forwards them.
fn ingest_packs() -> Vec<IngestPack> {
    firmware_packs()
        .iter()
        .take(2)
        .chain(refused_packs().iter().take(2))
        .map(|payload| {
            let o = validate_pack(payload, &ctx());
            IngestPack {
                apr: APR.into(),
                device: DEVICE.into(),
                bt: o.base_time,
                received_ms: RECEIVED_MS,
                raw: (!o.refusals.is_empty()).then(|| quarantine_excerpt(payload)),
                readings: o.readings,
                refusals: o.refusals,
            }
        })
        .collect()
}

/// A segment and a ledger written by the real disk spool, each prefixed by
/// the byte the `spool_segment` target reads as the segment's first id.
fn spool_files() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let spool = DiskSpool::open(DiskSpoolOptions {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 20,
            when_full: apr_gateway::config::WhenFull::Block,
        })
        .expect("spool opens");
        let ids = spool.append_batch(ingest_packs()).await.expect("appends");
        // The forwarder takes a batch; the server stored its first two packs.
        let out = spool.next_batch(1000).await.expect("hands out");
        assert_eq!(out.len(), ids.len());
        spool.release(&ids[..2]).await.expect("releases");
    });
    let mut files = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        let data = std::fs::read(&path).expect("reads");
        let first = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u8>().ok());
        match first {
            Some(first) => files.push((
                format!("seed-segment-{first}"),
                [&[first][..], &data].concat(),
            )),
            None if name == "ledger.log" => {
                files.push(("seed-ledger".into(), [&[0u8][..], &data].concat()))
            }
            None => {}
        }
    }
    files
}

fn seeds() -> Seeds {
    let mut s = Seeds::new();
    let packs = firmware_packs();
    let refused = refused_packs();
    let json = s.entry("senml_json").or_default();
    for (i, p) in packs.iter().enumerate() {
        json.insert(format!("seed-firmware-{i}.json"), p.clone());
    }
    for (i, p) in refused.iter().enumerate() {
        json.insert(format!("seed-refused-{i}.json"), p.clone());
    }
    let cbor = s.entry("senml_cbor").or_default();
    for (i, p) in packs.iter().enumerate().take(3) {
        cbor.insert(format!("seed-firmware-{i}.cbor"), json_to_cbor(p));
    }
    for (i, p) in refused.iter().enumerate() {
        cbor.insert(format!("seed-refused-{i}.cbor"), json_to_cbor(p));
    }

    let topics = s.entry("topic").or_default();
    for (i, t) in [
        "apr/los-aromos/caseta/up",
        "apr/los-aromos/caseta/status",
        "apr/los-aromos/estanque-1/config",
        "apr/el-quillay/pozo/ack",
        "apr/los-aromos/+/up",
        "apr/los-aromos/caseta/up/extra",
    ]
    .iter()
    .enumerate()
    {
        topics.insert(format!("seed-{i}"), t.as_bytes().to_vec());
    }

    let batch = IngestBatch {
        gateway: "gw-los-aromos".into(),
        seq: 42,
        packs: ingest_packs(),
        statuses: vec![DeviceStatus {
            apr: APR.into(),
            device: DEVICE.into(),
            online: false,
            at_ms: RECEIVED_MS,
        }],
    };
    let ingest = s.entry("ingest_batch").or_default();
    ingest.insert(
        "seed-batch.json".into(),
        serde_json::to_vec(&batch).expect("encodes"),
    );

    let config = s.entry("firmware_config").or_default();
    let server_pushed = serde_json::to_vec(&apr_server::device::default_config(300)).expect("json");
    config.insert("seed-server-default.json".into(), server_pushed);
    config.insert(
        "seed-full.json".into(),
        br#"{"report_interval_s": 300,
 "k_factor_l_per_pulse": 10.0,
 "calibration": {"chlorine": [[4.0, 0.0], [20.0, 5.0]],
                 "tank_level": [[4.0, 0.0], [20.0, 100.0]]},
 "thresholds": {"chlorine_low": 0.2}}"#
            .to_vec(),
    );

    let settings = s.entry("settings_toml").or_default();
    settings.insert(
        "seed-gateway.toml".into(),
        apr_gateway::config::configfile().into_bytes(),
    );
    settings.insert(
        "seed-server.toml".into(),
        apr_server::config::configfile().into_bytes(),
    );
    settings.insert(
        "seed-env".into(),
        b"id = \"gw-1\"\naprs = [\"los-aromos\"]\n[spool]\ndir = \"/var/lib/apr/spool\"\n\0\
APR_GATEWAY__SERVER__TOKEN=secret\nAPR_GATEWAY__FORWARD__MAX_BATCH_READINGS=500\nAPR_GATEWAY__APRS=[\"a\", \"b\"]\n"
            .to_vec(),
    );
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware/twin/scenarios/leak.toml");
    settings.insert(
        "seed-scenario-leak.toml".into(),
        std::fs::read(scenario).expect("scenario file"),
    );

    let spool = s.entry("spool_segment").or_default();
    for (name, data) in spool_files() {
        spool.insert(name, data);
    }
    s
}

#[test]
fn the_fuzz_seed_corpus_is_real_and_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("APR_FUZZ_SEEDS_WRITE").is_some();
    let seeds = seeds();

    // The seeds are what they claim to be.
    for p in &seeds["senml_json"] {
        if p.0.starts_with("seed-firmware") {
            let o = validate_pack(p.1, &ctx());
            assert!(
                o.refusals.is_empty() && !o.readings.is_empty(),
                "{}: {o:?}",
                p.0
            );
        }
    }
    for (name, cbor) in &seeds["senml_cbor"] {
        let json = &seeds["senml_json"][&name.replace(".cbor", ".json")];
        assert_eq!(
            validate_pack(cbor, &ctx()),
            validate_pack(json, &ctx()),
            "{name}"
        );
    }
    assert!(decode_batch(&seeds["ingest_batch"]["seed-batch.json"]).is_ok());
    let spool = &seeds["spool_segment"];
    let segment = spool
        .iter()
        .find(|(n, _)| n.starts_with("seed-segment"))
        .expect("a segment");
    let (scan, packs) = read_segment(u64::from(segment.1[0]), &segment.1[1..]);
    assert_eq!(scan.problem, None);
    assert_eq!(packs.len(), 4);
    assert!(packs.iter().all(|(_, p)| p.is_ok()));
    let (released, _, problem) = scan_ledger(&spool["seed-ledger"][1..]);
    assert_eq!((released.len(), problem), (2, None));

    let mut stale = Vec::new();
    for (target, files) in &seeds {
        let dir = root.join(target);
        if write {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for old in std::fs::read_dir(&dir).expect("lists").flatten() {
                if old.file_name().to_string_lossy().starts_with("seed-") {
                    std::fs::remove_file(old.path()).expect("removes");
                }
            }
        }
        for (name, data) in files {
            let path = dir.join(name);
            if write {
                std::fs::write(&path, data).expect("writes");
            } else if *target == "settings_toml" {
                // The printed templates grow with every new config key; an
                // older one is still a real configuration file to start from.
                if !path.exists() {
                    stale.push(path.display().to_string());
                }
            } else if std::fs::read(&path).ok().as_ref() != Some(data) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seed files missing or stale (APR_FUZZ_SEEDS_WRITE=1 rewrites them): {stale:?}"
    );
}
