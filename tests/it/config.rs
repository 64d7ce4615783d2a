//! `config/example.toml` holds only settings the code knows, and each of them checks out.

use panther_triage::config::{Config, Duplicates, Section};
use panther_triage::panther::{Severity, Status};
use panther_triage::tables::{Format, TableConfig};
use panther_triage::triage::Verdict;

/// The example as the daemon reads it, with its secret file pointed at a temporary one.
fn example() -> Config {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k\n").unwrap();
    let text = std::fs::read_to_string(crate::repo().join("config/example.toml")).unwrap();
    let key_line = "api_key_file = \"/run/secrets/panther\"";
    assert!(text.contains(key_line), "the example reads the key from a file");
    let text = text.replace(key_line, "api_key_file = \"key\"");
    Config::from_toml(&dir.path().join("example.toml"), &text, Vec::new())
        .unwrap_or_else(|e| panic!("config/example.toml: {e}"))
}

#[test]
fn the_example_configuration_is_valid_and_means_what_its_comments_say() {
    let c = example();
    let formats: Vec<Format> = c.tables.iter().map(|s| s.format).collect();
    assert_eq!(formats, vec![Format::Anomali, Format::List, Format::Csv], "the example shows each format");
    assert_eq!(c.tables[0].refresh, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(c.filter.statuses, vec![Status::Open]);
    assert_eq!(c.filter.severities, Severity::ALL.to_vec());
    assert!(!c.filter.detection_id.as_ref().unwrap().is_match("AWS.CloudTrail.Test.X").unwrap());
    assert_eq!(c.rules.len(), 4);
    assert_eq!(c.rules[0].verdict, Verdict::Malicious);
    assert_eq!(c.rules[0].set_status, Some(Status::Triaged));
    assert_eq!(c.sync.include, Section::ALL.to_vec());
    assert_eq!(c.sync.duplicates, Duplicates::Link);
    assert_eq!(c.state_path, std::path::Path::new("/var/lib/panther-triage/state.db"));
}

#[test]
fn the_demo_configuration_is_valid() {
    let path = crate::repo().join("fixtures/demo/config.toml");
    let c = Config::load_with_env(&path, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.rules.len(), 4);
}

#[test]
fn a_typo_in_a_table_key_is_an_error_naming_it() {
    let bad = "name = \"x\"\npath = \"/x\"\nformat = \"list\"\nknid = \"ip\"\n";
    let err = toml::from_str::<TableConfig>(bad).unwrap_err().to_string();
    assert!(err.contains("unknown field `knid`"), "{err}");
}

#[test]
fn table_settings_are_checked_with_the_key_to_change() {
    let parse = |t: &str| toml::from_str::<TableConfig>(t).unwrap().to_spec().unwrap_err().to_string();
    assert!(parse("name = \"x\"\npath = \"/x\"\nformat = \"list\"\n").contains("a list table needs `kind`"));
    assert!(parse("name = \"x\"\npath = \"/x\"\nformat = \"xml\"\n").contains("`format`: unknown table format"));
    assert!(parse("name = \"x\"\npath = \"/x\"\nformat = \"list\"\nkind = \"asn\"\n").contains("`kind`: unknown kind"));
    let refresh = parse("name = \"x\"\npath = \"/x\"\nformat = \"anomali\"\nrefresh = \"soon\"\n");
    assert!(refresh.contains("`refresh`") && refresh.contains("60m"), "{refresh}");
    assert!(parse("name = \"a.b\"\npath = \"/x\"\nformat = \"anomali\"\n").contains("name must be"));
}
