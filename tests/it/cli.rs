//! The `enrich` and `bench` commands as a user runs them.

use std::collections::HashMap;

use crate::{bin, repo, run, shared, text};

fn fixture(name: &str) -> String {
    repo().join("fixtures").join(name).to_str().unwrap().to_owned()
}

/// `enrich` with the fixture's Anomali table on `alerts`, on the fixtures' clock, plus `extra`.
fn enrich_fixture(alerts: &str, extra: &[&str]) -> std::process::Output {
    let table = fixture("anomali.jsonl");
    run(bin().args(["enrich", "--table", &table, "--alerts", alerts, "--now", "2026-01-01T00:00:00Z"]).args(extra))
}

/// The README's first command, in full.
fn enrich_fixtures(out: &std::path::Path, enriched: &std::path::Path) -> std::process::Output {
    run(bin().args([
        "enrich",
        "--table",
        &fixture("anomali.jsonl"),
        "--table",
        &format!("path={},format=list,kind=ip", fixture("tor_exit_nodes.txt")),
        "--table",
        &format!("path={},format=csv", fixture("watchlist.csv")),
        "--alerts",
        &fixture("alerts.jsonl"),
        "--now",
        "2026-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
        "--enriched",
        enriched.to_str().unwrap(),
    ]))
}

#[test]
fn enrich_reports_tables_and_matches_and_writes_both_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (tsv, enriched) = (dir.path().join("m.tsv"), dir.path().join("e.jsonl"));
    let out = enrich_fixtures(&tsv, &enriched);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(stdout.contains("table anomali: 2000 rows, 1762 eligible, 0 rejected"), "{stdout}");
    assert!(stdout.contains("table tor_exit_nodes: 6 rows, 6 eligible, 0 rejected"), "{stdout}");
    assert!(stdout.contains("table watchlist: 5 rows, 3 eligible, 0 rejected"), "{stdout}");
    assert!(stdout.contains("alerts 40, events 200, lookups 785, matches 187"), "{stdout}");
    #[cfg(unix)]
    for f in [&tsv, &enriched] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} holds alert data: the owner's alone", f.display());
    }

    let tsv = std::fs::read_to_string(tsv).unwrap();
    assert_eq!(tsv.lines().count(), 187);
    // The csv rows that are inactive or expired never match; the others do, whatever their case.
    assert!(tsv.contains("\tvortex165.info\t2\n"), "{tsv}");
    assert!(!tsv.contains("alpha988.org\t4") && !tsv.contains("quartz617.raven777.xyz\t5"));
    // The list table's /24 (written with host bits set) covers addresses in it.
    assert!(tsv.contains("\t91.129.139.228\t9\n"), "{tsv}");

    let enriched = std::fs::read_to_string(enriched).unwrap();
    let mut tables_seen: HashMap<String, usize> = HashMap::new();
    for line in enriched.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for (table, selectors) in v["p_enrichment"].as_object().unwrap() {
            *tables_seen.entry(table.clone()).or_default() += 1;
            for rows in selectors.as_object().unwrap().values() {
                for row in rows.as_array().unwrap() {
                    assert!(row["p_match"].is_string(), "{row}");
                }
            }
        }
    }
    assert_eq!(tables_seen.len(), 3, "{tables_seen:?}");
}

#[test]
fn a_custom_selector_reads_only_its_log_type() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("m.tsv");
    let out = enrich_fixture(
        &fixture("alerts.jsonl"),
        &["--selector", "Okta.SystemLog:sourceIPAddress:ip", "--out", tsv.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(fixture("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tsv = std::fs::read_to_string(tsv).unwrap();
    let custom: Vec<&str> = tsv.lines().filter(|l| l.split('\t').nth(2) == Some("sourceIPAddress")).collect();
    assert!(!custom.is_empty(), "the fixture has Okta events whose source IP is in the table");
    for line in custom {
        let f: Vec<&str> = line.split('\t').collect();
        let alert = alerts.iter().find(|a| a["id"] == f[0]).unwrap();
        let event = &alert["events"][f[1].parse::<usize>().unwrap()];
        assert_eq!(event["p_log_type"], "Okta.SystemLog", "{line}");
        assert_eq!(event["sourceIPAddress"], f[3]);
    }
}

#[test]
fn a_table_in_the_wrong_format_is_an_error_naming_the_file_and_line() {
    let out = run(bin().args(["enrich", "--table", &fixture("watchlist.csv"), "--alerts", &fixture("alerts.jsonl")]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("watchlist.csv:1: not a anomali"), "{err}");
    assert!(err.contains("check the table's `format`"), "{err}");
}

#[test]
fn a_missing_table_file_names_its_path() {
    let out = run(bin().args(["enrich", "--table", "/nonexistent/intel.jsonl", "--alerts", &fixture("alerts.jsonl")]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read table file /nonexistent/intel.jsonl"), "{}", text(&out.stderr));
}

#[test]
fn usage_mistakes_exit_2_and_say_what_to_write() {
    let cases: [(&[&str], &str); 4] = [
        (&["--table", "path=x.txt,format=list"], "a list table needs `kind`"),
        (&["--table", "path=x.txt,format=yaml"], "unknown table format \"yaml\""),
        (&["--table", "x.jsonl", "--now", "yesterday"], "write it as RFC 3339"),
        (&["--table", "x.jsonl", "--selector", "sourceIPAddress"], "expected LOG_TYPE:DOTTED.PATH:KIND"),
    ];
    for (args, want) in cases {
        let out = run(bin().arg("enrich").args(args).args(["--alerts", &fixture("alerts.jsonl")]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn unreadable_alert_lines_are_reported_and_the_rest_enriched() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let good = std::fs::read_to_string(fixture("alerts.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&alerts, format!("{first}\n{{\"id\": \"broken\", \"events\": [\n{first}\n")).unwrap();
    let tsv = dir.path().join("m.tsv");
    let out = enrich_fixture(alerts.to_str().unwrap(), &["--out", tsv.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a skipped alert must not look like success: {stdout}{stderr}");
    assert!(stdout.contains("alerts 2,"), "{stdout}");
    assert!(stderr.contains("alerts.jsonl:2: not an alert JSON object"), "{stderr}");
    // The readable alerts' matches are written all the same.
    let id = serde_json::from_str::<serde_json::Value>(first).unwrap()["id"].as_str().unwrap().to_owned();
    let tsv = std::fs::read_to_string(tsv).unwrap();
    assert!(!tsv.is_empty() && tsv.lines().all(|l| l.starts_with(&id)), "{tsv}");
}

#[test]
fn an_alert_line_that_is_not_utf8_is_reported_alone_and_the_rest_enriched() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let good = std::fs::read_to_string(fixture("alerts.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let mut body = format!("{first}\n{first}\n").into_bytes();
    body.extend_from_slice(b"{\"id\": \"bad\xff\", \"events\": []}\n");
    body.extend_from_slice(format!("{first}\n").as_bytes());
    std::fs::write(&alerts, body).unwrap();
    let tsv = dir.path().join("m.tsv");
    let out = enrich_fixture(alerts.to_str().unwrap(), &["--out", tsv.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("alerts 3,"), "{stdout}");
    assert!(stderr.contains("alerts.jsonl:3: not UTF-8 text"), "{stderr}");
    let tsv = std::fs::read_to_string(tsv).unwrap();
    assert!(!tsv.is_empty(), "the readable alerts' matches are written");
}

#[test]
fn bad_alert_lines_past_the_first_chunk_are_reported_at_their_line_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let good = std::fs::read_to_string(fixture("alerts.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    // Over 3 MiB, so that the file is read in several chunks (1 MiB each), with blank lines, which
    // count in the numbering, before and among the bad ones.
    let lines_wanted = (3 << 20) / first.len() + 1;
    let mut body = Vec::new();
    let mut bad_at = Vec::new();
    for n in 1..=lines_wanted {
        if n % 1000 == 0 {
            body.push(b'\n');
        } else if n == 5 || n == lines_wanted / 2 || n == lines_wanted - 1 {
            bad_at.push(n);
            body.extend_from_slice(b"{\"id\": \"cut\n");
        } else {
            body.extend_from_slice(first.as_bytes());
            body.push(b'\n');
        }
    }
    std::fs::write(&alerts, body).unwrap();
    let out = enrich_fixture(alerts.to_str().unwrap(), &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let good_lines = lines_wanted - lines_wanted / 1000 - bad_at.len();
    assert!(stdout.contains(&format!("alerts {good_lines},")), "{stdout}");
    for n in bad_at {
        assert!(stderr.contains(&format!("alerts.jsonl:{n}: ")), "line {n} not reported as such: {stderr}");
    }
}

#[test]
fn bench_prints_figures_and_ratios_on_a_small_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin()
        .args([
            "bench",
            "--sizes",
            "3000",
            "--alerts",
            "30",
            "--events",
            "5",
            "--work-dir",
            dir.path().to_str().unwrap(),
            "--shared",
        ])
        .arg(shared()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("3000 "))
        .unwrap_or_else(|| panic!("no figures row: {stdout}"));
    assert!(row.ends_with("identical"), "{row}");
    for head in ["load rows/s", "peer rows/s", "lookups/s", "RSS MB", "/file"] {
        assert!(stdout.contains(head), "{head} missing: {stdout}");
    }
}

#[test]
fn the_container_build_copies_every_file_the_code_embeds() {
    // include_str!/include_bytes! paths, resolved from each source file: the Dockerfile's build stage
    // must COPY their top-level folder, or `docker build` fails where `cargo build` works.
    let dockerfile = std::fs::read_to_string(crate::repo().join("Dockerfile")).unwrap();
    let mut stack = vec![crate::repo().join("src")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let embeds = ["include_str!(\"", "include_bytes!(\""].into_iter().flat_map(|m| text.split(m).skip(1));
            for part in embeds {
                let Some(rel) = part.split('"').next() else { continue };
                let target = path.parent().unwrap().join(rel);
                let Ok(target) = target.canonicalize() else { continue };
                let Ok(inside) = target.strip_prefix(crate::repo().canonicalize().unwrap()) else { continue };
                let top = inside.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
                assert!(
                    dockerfile.contains(&format!("COPY {top} ./{top}")),
                    "{} embeds {rel}: the Dockerfile must COPY {top}",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "found the embedded files");
}
