//! The configuration loader (`Config::from_toml`) on arbitrary text, with a canary secret planted in
//! it. Asserts: no panic, and the canary never shows in an error, in `check-config`'s redacted output
//! or in the configuration's Debug form: secrets never appear in what the daemon prints.
//!
//! Input: one selector byte, then the TOML text (read as lossy UTF-8). The selector says where the
//! canary goes: in the environment (`PANTHER_TRIAGE__PANTHER__API_KEY` or `..WEBHOOK__SECRET`), or
//! as an `api_key = ...` / `secret = ...` line written in one of several forms at a line of the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use panther_triage::config::{Config, ConfigError};

const CANARY: &str = "CANARY-KEY-5f0c2e91";

/// How an inserted secret line writes its value (`{}` is the canary).
const FORMS: [&str; 8] =
    ["\"{}\"", "'{}'", "\"\"\"{}\"\"\"", "'''{}'''", "[\"{}\"]", "{ k = \"{}\" }", "\"{}\\u0007\"", "\"{}\n"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    if text.contains("CANARY") {
        return; // the canary must be ours alone
    }
    let mut env = Vec::new();
    let (text, always_secret) = match sel & 0b11 {
        0 => {
            env.push(("PANTHER_TRIAGE__PANTHER__API_KEY".to_owned(), CANARY.to_owned()));
            (text.into_owned(), true)
        }
        1 => {
            env.push(("PANTHER_TRIAGE__WEBHOOK__SECRET".to_owned(), CANARY.to_owned()));
            (text.into_owned(), true)
        }
        _ => {
            let key = if sel & 0b100 == 0 { "api_key" } else { "secret" };
            let form = FORMS[usize::from(sel >> 3) % FORMS.len()].replace("{}", CANARY);
            let lines: Vec<&str> = text.split('\n').collect();
            let at = usize::from(sel >> 6) * lines.len() / 3; // start, a third, two thirds, end
            let mut out: Vec<String> = lines[..at].iter().map(|l| l.to_string()).collect();
            out.push(format!("{key} = {form}"));
            out.extend(lines[at..].iter().map(|l| l.to_string()));
            (out.join("\n"), false)
        }
    };
    // Relative paths (secret files, tables, state) resolve under a directory that does not exist.
    let result = Config::from_toml(Path::new("/nonexistent/panther-triage-fuzz/config.toml"), &text, env);
    // The canary is a secret when it is the value (or inside the value) of a secret's key; where the
    // text swallowed it into another value (an open multi-line string), it is not, and may be echoed.
    let secret = always_secret || canary_only_under_secret_keys(&text);
    match result {
        Ok(config) => {
            if secret {
                let shown = config.redacted();
                assert!(!shown.contains(CANARY), "the redacted configuration shows the secret:\n{shown}");
                let debug = format!("{config:?}");
                assert!(!debug.contains(CANARY), "Debug shows the secret");
            }
        }
        Err(e) => {
            let shown = e.to_string();
            if secret {
                assert!(!shown.contains(CANARY), "an error shows the secret:\n{shown}");
            }
            if let ConfigError::Invalid { problems, .. } = &e {
                assert!(!problems.is_empty(), "an invalid configuration with no problem listed");
            }
        }
    }
});

/// Whether every string holding the canary sits under a key named `api_key` or `secret` (or the
/// text is not TOML at all: then the loader reports a syntax error, which never quotes the text).
fn canary_only_under_secret_keys(text: &str) -> bool {
    fn walk(v: &toml::Value, under_secret: bool) -> bool {
        match v {
            toml::Value::String(s) => under_secret || !s.contains(CANARY),
            toml::Value::Array(a) => a.iter().all(|x| walk(x, under_secret)),
            toml::Value::Table(t) => {
                t.iter().all(|(k, x)| !k.contains(CANARY) && walk(x, under_secret || k == "api_key" || k == "secret"))
            }
            _ => true,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(t) => walk(&toml::Value::Table(t), false),
        Err(_) => true,
    }
}
