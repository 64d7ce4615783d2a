//! Row templates: the rows of a feed file nearly all share one layout, byte for byte outside their
//! strings and numbers. A template is that layout, learned from a row the general scanner accepted;
//! a later row is read against it by comparing the fixed bytes and scanning only the holes (string
//! contents, numbers). That skips the per-member grammar work of the general scanner, which was
//! most of a load's instructions.
//!
//! A row that differs anywhere (another key, an escape, one more tag) is not read by the template
//! and goes to the general scanner as before. A row the template reads is valid JSON: its fixed
//! bytes are those of a valid row, and every hole holds a plain string content or a valid number,
//! so it has the very structure the learned row had.

use crate::json::scan;

/// At most this many templates per batch of rows; further layouts are read by the general scanner.
pub const MAX_TEMPLATES: usize = 4;

/// What follows a step's fixed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// Plain string content (no escape, no control character), up to the closing quote, which is
    /// the first fixed byte of the next step.
    Str,
    /// A JSON number.
    Num,
    /// Nothing: the last step.
    End,
}

/// Fixed bytes `text[at..at + len]`, then a hole.
#[derive(Debug, Clone, Copy)]
struct Step {
    at: u32,
    len: u32,
    hole: Hole,
}

/// A place in a row: `off` bytes from where step `step`'s fixed bytes start (at most their length).
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    step: u32,
    off: u32,
}

/// One top-level member: where its key and its value start and end.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: Place,
    key_len: u32,
    start: Place,
    end: Place,
    /// Whether the value is a string (its content is then the value less its quotes).
    string: bool,
    /// The member's role, if any (see [`Template::learn`]).
    role: Option<u8>,
}

/// A member as a template reads it: key, raw value text, and the content of a string value.
pub type ReadMember<'a> = (&'a str, &'a str, Option<&'a str>);

#[derive(Debug, Clone, Default)]
pub struct Template {
    text: Vec<u8>,
    steps: Vec<Step>,
    members: Vec<Member>,
}

impl Template {
    /// Learns the layout of `line`, a JSON object the general scanner accepted. `None` where the
    /// row is not one a template can serve: a key or a string with an escape. `role` names the
    /// members a reader wants by their keys.
    pub fn learn(line: &str, role: impl Fn(&str) -> Option<u8>) -> Option<Template> {
        if line.contains('\\') {
            return None;
        }
        let b = line.as_bytes();
        let base = line.as_ptr() as usize;
        let offset = |s: &str| s.as_ptr() as usize - base;
        // (key start, key, value start, value end), in bytes of `line`.
        let mut spans: Vec<(usize, &str, usize, usize)> = Vec::new();
        scan::walk_object(line, |sc, k, d| {
            let raw = sc.value(d)?;
            spans.push((offset(k.text), k.text, offset(raw), offset(raw) + raw.len()));
            Some(())
        })?;
        // The holes, in order: (start, end, kind).
        let mut holes: Vec<(usize, usize, Hole)> = Vec::new();
        for &(_, _, start, end) in &spans {
            let mut i = start;
            while i < end {
                match b[i] {
                    b'"' => {
                        // No escapes (checked above): the next quote closes the string.
                        let close = i + 1 + b[i + 1..end].iter().position(|&c| c == b'"')?;
                        holes.push((i + 1, close, Hole::Str));
                        i = close + 1;
                    }
                    b'-' | b'0'..=b'9' => {
                        let stop = b[i..end]
                            .iter()
                            .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                            .map_or(end, |p| i + p);
                        holes.push((i, stop, Hole::Num));
                        i = stop;
                    }
                    _ => i += 1,
                }
            }
        }
        let mut t = Template::default();
        // Where each step's fixed bytes start in `line`.
        let mut starts = Vec::new();
        let mut at = 0;
        for (start, end, hole) in holes.into_iter().chain([(b.len(), b.len(), Hole::End)]) {
            starts.push(at);
            t.steps.push(Step { at: t.text.len() as u32, len: (start - at) as u32, hole });
            t.text.extend_from_slice(&b[at..start]);
            at = end;
        }
        let place = |p: usize| -> Option<Place> {
            let step = starts.iter().rposition(|&s| s <= p)?;
            let off = p - starts[step];
            (off <= t.steps[step].len as usize).then_some(Place { step: step as u32, off: off as u32 })
        };
        let mut members = Vec::with_capacity(spans.len());
        for (key_at, key, start, end) in spans {
            members.push(Member {
                key: place(key_at)?,
                key_len: key.len() as u32,
                start: place(start)?,
                end: place(end)?,
                string: b[start] == b'"',
                role: role(key),
            });
        }
        t.members = members;
        Some(t)
    }

    /// Reads `line` against the template, handing each member to `member` with its role; false
    /// where the row does not have this layout (then `member` may have seen some members).
    pub fn read<'a>(
        &self,
        line: &'a str,
        at: &mut Vec<u32>,
        mut member: impl FnMut(Option<u8>, ReadMember<'a>),
    ) -> bool {
        let b = line.as_bytes();
        at.clear();
        let mut i = 0;
        for step in &self.steps {
            at.push(i as u32);
            let lit = &self.text[step.at as usize..(step.at + step.len) as usize];
            if !b.get(i..i + lit.len()).is_some_and(|run| scan::same_bytes(run, lit)) {
                return false;
            }
            i += lit.len();
            match step.hole {
                Hole::Str => {
                    i = scan::plain_end(line, i);
                    if b.get(i) != Some(&b'"') {
                        return false;
                    }
                }
                Hole::Num => match scan::number_end(line, i) {
                    Some(end) => i = end,
                    None => return false,
                },
                Hole::End => {}
            }
        }
        if i != b.len() {
            return false;
        }
        let pos = |p: Place| (at[p.step as usize] + p.off) as usize;
        for m in &self.members {
            let k = pos(m.key);
            let raw = &line[pos(m.start)..pos(m.end)];
            let plain = m.string.then(|| &raw[1..raw.len() - 1]);
            member(m.role, (&line[k..k + m.key_len as usize], raw, plain));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"id":"400000001","value":"38.158.13.55","match":["38.158.13.55"],"type":"ip","confidence":12,"status":"active","tags":[{"id":"t564","name":"nova","tlp":"white"}],"meta":{"severity":"low","n":-1.5e3,"ok":true,"none":null}, "p_log_type" : "Anomali.Indicator" }"#;

    /// The members as the general scanner reads them.
    fn general(line: &str) -> Option<Vec<ReadMember<'_>>> {
        let mut out = Vec::new();
        scan::walk_object(line, |sc, k, d| {
            let (raw, plain) = sc.value_or_plain(d)?;
            out.push((k.text, raw, plain));
            Some(())
        })?;
        Some(out)
    }

    fn read(t: &Template, line: &str) -> Option<Vec<ReadMember<'static>>> {
        let line: &'static str = Box::leak(line.to_owned().into_boxed_str());
        let mut out = Vec::new();
        t.read(line, &mut Vec::new(), |_, m| out.push(m)).then_some(out)
    }

    #[test]
    fn a_template_reads_only_rows_of_its_layout_and_reads_them_as_the_general_scanner_does() {
        let t = Template::learn(ROW, |_| None).unwrap();
        assert_eq!(read(&t, ROW), general(ROW));
        let mut next = scan::test_rng(0x2545_F491_4F6C_DD1D);
        let alphabet: Vec<char> = "\"\\{}[]:,0123456789-+.eE \t\n\u{1}atrufnlé".chars().collect();
        let (mut same_layout, mut refused) = (0, 0);
        for _ in 0..100_000 {
            let mut chars: Vec<char> = ROW.chars().collect();
            for _ in 0..1 + next(2) {
                let at = next(chars.len());
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            let line: String = chars.into_iter().collect();
            match read(&t, &line) {
                Some(members) => {
                    same_layout += 1;
                    assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "accepted invalid JSON: {line}");
                    assert_eq!(Some(members), general(&line), "{line}");
                }
                None => refused += 1,
            }
        }
        assert!(same_layout > 5_000 && refused > 5_000, "read {same_layout}, refused {refused}");
    }

    #[test]
    fn rows_with_escapes_teach_no_template() {
        assert!(Template::learn(r#"{"id":"a\"b","type":"ip"}"#, |_| None).is_none());
        assert!(Template::learn(r#"{"i\u0064":"1"}"#, |_| None).is_none());
        let t = Template::learn(r#"{"id":"1","value":"x"}"#, |_| None).unwrap();
        assert!(read(&t, r#"{"id":"2","value":"a\u0041"}"#).is_none(), "an escape goes to the general scanner");
        assert!(read(&t, r#"{"id":2,"value":"y"}"#).is_none(), "a number where a string was");
        assert!(read(&t, r#"{"id":"2","value":"y","x":1}"#).is_none(), "one more member");
        assert_eq!(read(&t, r#"{"id":"22","value":"yé"}"#).map(|m| m[1]), Some(("value", "\"yé\"", Some("yé"))));
    }
}
