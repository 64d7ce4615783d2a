//! `config/example.toml` holds only settings the code knows, and each of them checks out.

use panther_triage::enrich::SelectorConfig;
use panther_triage::tables::{Format, TableConfig};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    tables: Vec<TableConfig>,
    selectors: Vec<SelectorConfig>,
}

fn example() -> Example {
    let text = std::fs::read_to_string(crate::repo().join("config/example.toml")).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("config/example.toml: {e}"))
}

#[test]
fn every_table_and_selector_in_the_example_is_valid() {
    let ex = example();
    let specs: Vec<_> = ex.tables.iter().map(|t| t.to_spec().unwrap_or_else(|e| panic!("{e}"))).collect();
    let formats: Vec<Format> = specs.iter().map(|s| s.format).collect();
    assert_eq!(formats, vec![Format::Anomali, Format::List, Format::Csv], "the example shows each format");
    assert_eq!(specs[0].refresh, Some(std::time::Duration::from_secs(3600)));
    for s in &ex.selectors {
        s.to_selector().unwrap_or_else(|e| panic!("{e}"));
    }
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
