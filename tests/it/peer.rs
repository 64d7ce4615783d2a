//! The enrichment output must be byte-identical to the reference's `--out` on generated data.

use std::path::Path;

use crate::{bin, python, run, text, tool};

/// Generates a 100k-row table and 1000 alerts of 20 events with `seed`, then compares our TSV with
/// the reference's, with and without subdomain matching.
fn compare_with_reference(seed: u64, hit_rate: &str) {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.jsonl");
    let alerts = dir.path().join("alerts.jsonl");
    let gen = tool("gen_intel.py");
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    let seed = seed.to_string();
    python(&gen, &["indicators", "100000", &p(&table), "--seed", &seed]);
    python(
        &gen,
        &["alerts", "1000", "20", &p(&alerts), "--seed", &seed, "--table-size", "100000", "--hit-rate", hit_rate],
    );
    for subdomains in [false, true] {
        let theirs = dir.path().join(format!("peer-{subdomains}.tsv"));
        let ours = dir.path().join(format!("ours-{subdomains}.tsv"));
        let mut peer_args = vec![p(&table), p(&alerts), "--out".into(), p(&theirs)];
        let mut cmd = bin();
        cmd.args([
            "enrich",
            "--table",
            &p(&table),
            "--alerts",
            &p(&alerts),
            "--now",
            "2026-01-01T00:00:00Z",
            "--out",
            &p(&ours),
        ]);
        if subdomains {
            peer_args.push("--subdomains".into());
            cmd.arg("--subdomains");
        }
        python(&tool("peer_enrich.py"), &peer_args.iter().map(String::as_str).collect::<Vec<_>>());
        let out = run(&mut cmd);
        assert!(out.status.success(), "enrich failed: {}", text(&out.stderr));
        let (a, b) = (std::fs::read(&theirs).unwrap(), std::fs::read(&ours).unwrap());
        let lines = a.iter().filter(|c| **c == b'\n').count();
        assert!(
            lines > 500,
            "seed {seed}: the reference found only {lines} matches; the comparison would prove little"
        );
        if a != b {
            let first = text(&a).lines().zip(text(&b).lines()).position(|(x, y)| x != y);
            panic!(
                "seed {seed}, subdomains {subdomains}: output differs from the reference ({} vs {} bytes; first differing line {first:?})",
                a.len(),
                b.len()
            );
        }
    }
}

#[test]
fn byte_identical_to_the_reference_seed_7() {
    compare_with_reference(7, "0.01");
}

#[test]
fn byte_identical_to_the_reference_seed_2026_with_more_hits() {
    compare_with_reference(2026, "0.05");
}

/// Hand-built rows and alerts for the corners generated data never reaches: networks written with
/// netmasks, hostmasks, scope IDs and IPv4-mapped prefixes, nested networks, upper-case IPv6, zones,
/// embedded IPv4, ties on `modified_ts` and on id (`0130` against `129`), JSON escapes, repeated
/// keys, confidence as a string or a float, a lone surrogate, values that are not strings.
#[test]
fn adversarial_rows_and_alerts_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let fx = crate::repo().join("fixtures/adversarial");
    let s = |x: &Path| x.to_str().unwrap().to_owned();
    let (table, alerts) = (fx.join("table.jsonl"), fx.join("alerts.jsonl"));
    for subdomains in [false, true] {
        let (theirs, ours) = (dir.path().join(format!("p{subdomains}")), dir.path().join(format!("o{subdomains}")));
        let mut peer = vec![s(&table), s(&alerts), "--out".into(), s(&theirs)];
        let mut cmd = bin();
        cmd.args([
            "enrich",
            "--table",
            &s(&table),
            "--alerts",
            &s(&alerts),
            "--now",
            "2026-01-01T00:00:00Z",
            "--out",
            &s(&ours),
        ]);
        if subdomains {
            peer.push("--subdomains".into());
            cmd.arg("--subdomains");
        }
        python(&tool("peer_enrich.py"), &peer.iter().map(String::as_str).collect::<Vec<_>>());
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let (a, b) = (std::fs::read_to_string(&theirs).unwrap(), std::fs::read_to_string(&ours).unwrap());
        assert!(a.lines().count() >= 30, "the reference found too little to compare:\n{a}");
        assert_eq!(a, b, "subdomains {subdomains}");
    }
}

#[test]
fn the_fixture_matches_the_reference_too() {
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (dir.path().join("peer.tsv"), dir.path().join("ours.tsv"));
    let fx = crate::repo().join("fixtures");
    let (table, alerts) = (fx.join("anomali.jsonl"), fx.join("alerts.jsonl"));
    let s = |x: &Path| x.to_str().unwrap().to_owned();
    python(&tool("peer_enrich.py"), &[&s(&table), &s(&alerts), "--out", &s(&theirs)]);
    let out = run(bin().args([
        "enrich",
        "--table",
        &s(&table),
        "--alerts",
        &s(&alerts),
        "--now",
        "2026-01-01T00:00:00Z",
        "--out",
        &s(&ours),
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(theirs).unwrap(), std::fs::read(ours).unwrap());
}
