//! The enrichment output must be byte-identical to the reference's `--out` on the same inputs.

use std::path::Path;

use crate::{bin, python, run, text, tool};

/// Runs the reference and `enrich` on one table and alerts file and returns both TSVs.
fn both_outputs(table: &Path, alerts: &Path, subdomains: bool) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (dir.path().join("peer.tsv"), dir.path().join("ours.tsv"));
    let s = |x: &Path| x.to_str().unwrap().to_owned();
    let mut peer_args = vec![s(table), s(alerts), "--out".into(), s(&theirs)];
    let mut cmd = bin();
    cmd.args([
        "enrich",
        "--table",
        &s(table),
        "--alerts",
        &s(alerts),
        "--now",
        "2026-01-01T00:00:00Z",
        "--out",
        &s(&ours),
    ]);
    if subdomains {
        peer_args.push("--subdomains".into());
        cmd.arg("--subdomains");
    }
    python(&tool("peer_enrich.py"), &peer_args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(&mut cmd);
    assert!(out.status.success(), "enrich failed: {}", text(&out.stderr));
    (std::fs::read_to_string(theirs).unwrap(), std::fs::read_to_string(ours).unwrap())
}

/// Compares, with and without subdomain matching, and checks the reference found enough to make
/// the comparison worth something.
fn assert_identical(table: &Path, alerts: &Path, at_least: usize) {
    for subdomains in [false, true] {
        let (theirs, ours) = both_outputs(table, alerts, subdomains);
        let lines = theirs.lines().count();
        assert!(lines >= at_least, "the reference found only {lines} matches; the comparison would prove little");
        if theirs != ours {
            let first = theirs.lines().zip(ours.lines()).position(|(x, y)| x != y);
            panic!(
                "{}, subdomains {subdomains}: output differs from the reference ({} vs {} lines; first differing line {first:?})",
                table.display(),
                lines,
                ours.lines().count()
            );
        }
    }
}

/// A 100k-row table and 1000 alerts of 20 events generated with `seed`.
fn generated(seed: u64, hit_rate: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (table, alerts) = (dir.path().join("table.jsonl"), dir.path().join("alerts.jsonl"));
    let gen = tool("gen_intel.py");
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    let seed = seed.to_string();
    python(&gen, &["indicators", "100000", &p(&table), "--seed", &seed]);
    python(
        &gen,
        &["alerts", "1000", "20", &p(&alerts), "--seed", &seed, "--table-size", "100000", "--hit-rate", hit_rate],
    );
    assert_identical(&table, &alerts, 500);
}

#[test]
fn byte_identical_to_the_reference_seed_7() {
    generated(7, "0.01");
}

#[test]
fn byte_identical_to_the_reference_seed_2026_with_more_hits() {
    generated(2026, "0.05");
}

/// Hand-built rows and alerts for the corners generated data never reaches: networks written with
/// netmasks, hostmasks, scope IDs and IPv4-mapped prefixes, nested networks, upper-case IPv6, zones,
/// embedded IPv4, ties on `modified_ts` and on id (`0130` against `129`), JSON escapes, repeated
/// keys, confidence as a string or a float, a lone surrogate, values that are not strings.
#[test]
fn adversarial_rows_and_alerts_match_the_reference() {
    let fx = crate::repo().join("fixtures/adversarial");
    assert_identical(&fx.join("table.jsonl"), &fx.join("alerts.jsonl"), 30);
}

#[test]
fn the_fixture_matches_the_reference_too() {
    let fx = crate::repo().join("fixtures");
    assert_identical(&fx.join("anomali.jsonl"), &fx.join("alerts.jsonl"), 150);
}
