//! Reading training and prediction data: JSON Lines, CSV and plain text.
//!
//! Every format gives [`Record`]s: an input sequence and, for training and evaluation, a
//! target sequence, each either symbols or numeric vectors, with the line they came from.
//!
//! - JSON Lines (`.jsonl`, `.json`): one object per line, `{"input": ..., "target": ...}`. A
//!   string is split into symbols (see [`Tokens`]); an array of strings is a list of symbols;
//!   an array of numbers is one number per step; an array of arrays of numbers is one vector
//!   per step.
//! - CSV (`.csv`): a header naming the columns `input` and `target` (others are ignored),
//!   then one row per example; fields may be quoted (`"a,b"`, `""` for a quote).
//! - Plain text (anything else): `input<TAB>target` per line, or, in a file without TABs, one
//!   sequence per line for next-symbol prediction: the target of each step is the next
//!   symbol, and of the last step the end symbol `</s>`.
//!
//! Blank lines are skipped. A malformed line is an error naming the file, the line, what was
//! expected and what was found.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;

use crate::vocab::END;

/// How a string becomes symbols.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tokens {
    /// Each character is a symbol (spaces included).
    Chars,
    /// Whitespace-separated words are symbols.
    Words,
}

impl Tokens {
    /// The symbols of `text`.
    pub fn split(self, text: &str) -> Vec<String> {
        match self {
            Tokens::Chars => text.chars().map(String::from).collect(),
            Tokens::Words => text.split_whitespace().map(String::from).collect(),
        }
    }

    /// Symbols joined back into text.
    pub fn join(self, symbols: &[String]) -> String {
        symbols.join(match self {
            Tokens::Chars => "",
            Tokens::Words => " ",
        })
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
    /// `input<TAB>target` or one sequence per line.
    Text,
}

impl Format {
    /// The format of `path` by its extension: `.jsonl`/`.json`, `.csv`, else text.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => Format::Jsonl,
            Some("csv") => Format::Csv,
            _ => Format::Text,
        }
    }
}

/// A sequence as read: symbols or one numeric vector per step.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSeq {
    /// Symbols.
    Symbols(Vec<String>),
    /// Vectors, all of one width.
    Numbers(Vec<Vec<f32>>),
}

impl RawSeq {
    /// Steps.
    pub fn len(&self) -> usize {
        match self {
            RawSeq::Symbols(s) => s.len(),
            RawSeq::Numbers(n) => n.len(),
        }
    }
}

/// One example as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The 1-based line it came from.
    pub line: usize,
    /// The input.
    pub input: RawSeq,
    /// The target (`None` when the file has none and none was needed).
    pub target: Option<RawSeq>,
}

/// Reads `path` in `format` (by extension when `None`); targets are required when
/// `need_target`.
///
/// # Errors
/// An unreadable file, or a malformed line: `FILE:LINE: expected ..., found ...`.
pub fn read_records(
    path: &Path,
    format: Option<Format>,
    tokens: Tokens,
    need_target: bool,
) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let format = format.unwrap_or_else(|| Format::of(path));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let at = |line: usize| format!("{}:{line}", path.display());
    let records = match format {
        Format::Jsonl => lines
            .map(|(n, l)| jsonl_record(n, l, tokens, need_target).with_context(|| at(n)))
            .collect::<Result<Vec<_>>>()?,
        Format::Csv => {
            let Some((n, header)) = lines.next() else {
                bail!(
                    "{}: expected a header line, found an empty file",
                    path.display()
                );
            };
            let header = split_csv(header).with_context(|| at(n))?;
            let column = |name: &str| header.iter().position(|h| h.trim() == name);
            let Some(input) = column("input") else {
                bail!(
                    "{}: expected a header naming the columns input and target, found {:?}",
                    at(n),
                    header
                );
            };
            let target = column("target");
            if need_target && target.is_none() {
                bail!("{}: expected a target column, found {:?}", at(n), header);
            }
            lines
                .map(|(n, l)| csv_record(n, l, input, target, tokens).with_context(|| at(n)))
                .collect::<Result<Vec<_>>>()?
        }
        Format::Text => {
            let lines: Vec<(usize, &str)> = lines.collect();
            let paired = lines.iter().any(|(_, l)| l.contains('\t'));
            lines
                .iter()
                .map(|&(n, l)| text_record(n, l, paired, tokens).with_context(|| at(n)))
                .collect::<Result<Vec<_>>>()?
        }
    };
    if records.is_empty() {
        bail!(
            "{}: expected at least one example, found none",
            path.display()
        );
    }
    Ok(records)
}

fn non_empty(seq: RawSeq, what: &str) -> Result<RawSeq> {
    if seq.len() == 0 {
        bail!("expected a non-empty {what}, found an empty one");
    }
    Ok(seq)
}

fn jsonl_record(line: usize, text: &str, tokens: Tokens, need_target: bool) -> Result<Record> {
    let value: Json = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "expected a JSON object {{\"input\": ..., \"target\": ...}}, found invalid JSON ({e})"
        )
    })?;
    let Json::Object(object) = value else {
        bail!(
            "expected a JSON object with \"input\", found {}",
            kind(&value)
        );
    };
    let Some(input) = object.get("input") else {
        bail!(
            "expected a field \"input\", found fields {:?}",
            object.keys().collect::<Vec<_>>()
        );
    };
    let input = non_empty(parse_json_seq(input, tokens, "input")?, "input")?;
    let target = match object.get("target") {
        Some(t) => Some(non_empty(parse_json_seq(t, tokens, "target")?, "target")?),
        None if need_target => bail!(
            "expected a field \"target\", found fields {:?}",
            object.keys().collect::<Vec<_>>()
        ),
        None => None,
    };
    Ok(Record {
        line,
        input,
        target,
    })
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// One sequence from JSON: a string (split by `tokens`), an array of symbols, of numbers (one
/// per step) or of number arrays (one vector per step); `field` names it in errors.
///
/// # Errors
/// Any other JSON, or vectors of different widths.
pub fn parse_json_seq(value: &Json, tokens: Tokens, field: &str) -> Result<RawSeq> {
    let expected = "a string, an array of symbols, of numbers or of number arrays";
    let number = |v: &Json| v.as_f64().map(|x| x as f32);
    match value {
        Json::String(s) => Ok(RawSeq::Symbols(tokens.split(s))),
        Json::Array(items) if items.iter().all(Json::is_string) => Ok(RawSeq::Symbols(
            items
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
        )),
        Json::Array(items) if items.iter().all(Json::is_number) => Ok(RawSeq::Numbers(
            items.iter().filter_map(number).map(|x| vec![x]).collect(),
        )),
        Json::Array(items) => {
            let mut steps = Vec::with_capacity(items.len());
            for (t, item) in items.iter().enumerate() {
                let step: Option<Vec<f32>> = item
                    .as_array()
                    .map(|xs| xs.iter().map(number).collect::<Option<Vec<f32>>>())
                    .unwrap_or(None);
                let Some(step) = step else {
                    bail!(
                        "\"{field}\": expected {expected}, found {} at step {t}",
                        kind(item)
                    );
                };
                if let Some(first) = steps.first().map(Vec::len)
                    && first != step.len()
                {
                    bail!(
                        "\"{field}\": expected vectors of {first} numbers like step 0, found {} at step {t}",
                        step.len()
                    );
                }
                steps.push(step);
            }
            Ok(RawSeq::Numbers(steps))
        }
        other => bail!("\"{field}\": expected {expected}, found {}", kind(other)),
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting; no newlines inside fields).
pub fn split_csv(line: &str) -> Result<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("one field");
        match (quoted, c) {
            (false, ',') => fields.push(String::new()),
            (false, '"') if field.is_empty() => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => {
                quoted = false;
                if let Some(&next) = chars.peek()
                    && next != ','
                {
                    bail!("expected a comma after a closing quote, found {next:?}");
                }
            }
            (_, c) => field.push(c),
        }
    }
    if quoted {
        bail!("expected a closing quote, found the end of the line");
    }
    Ok(fields)
}

fn csv_record(
    line: usize,
    text: &str,
    input: usize,
    target: Option<usize>,
    tokens: Tokens,
) -> Result<Record> {
    let fields = split_csv(text)?;
    let needed = input.max(target.unwrap_or(0)) + 1;
    if fields.len() < needed {
        bail!(
            "expected at least {needed} fields as the header says, found {}",
            fields.len()
        );
    }
    let seq = |i: usize, what| non_empty(RawSeq::Symbols(tokens.split(&fields[i])), what);
    Ok(Record {
        line,
        input: seq(input, "input")?,
        target: target.map(|t| seq(t, "target")).transpose()?,
    })
}

fn text_record(line: usize, text: &str, paired: bool, tokens: Tokens) -> Result<Record> {
    if paired {
        let fields: Vec<&str> = text.split('\t').collect();
        match fields.len() {
            2 => {}
            1 => bail!("expected input<TAB>target (other lines have TABs), found no TAB"),
            n => bail!("expected input<TAB>target, found {n} TAB-separated fields"),
        }
        let seq = |s: &str, what| non_empty(RawSeq::Symbols(tokens.split(s)), what);
        return Ok(Record {
            line,
            input: seq(fields[0], "input")?,
            target: Some(seq(fields[1], "target")?),
        });
    }
    let symbols = tokens.split(text);
    let mut next: Vec<String> = symbols.iter().skip(1).cloned().collect();
    next.push(END.to_string());
    Ok(Record {
        line,
        input: non_empty(RawSeq::Symbols(symbols), "input")?,
        target: Some(RawSeq::Symbols(next)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_honour_quotes_and_reject_stray_ones() {
        assert_eq!(
            split_csv(r#"ab,"c,d","e""f""#).unwrap(),
            ["ab", "c,d", "e\"f"]
        );
        assert_eq!(split_csv("a,,b").unwrap(), ["a", "", "b"]);
        let err = split_csv(r#""ab"c,d"#).unwrap_err().to_string();
        assert!(err.contains("found 'c'"), "{err}");
        assert!(
            split_csv(r#""ab"#)
                .unwrap_err()
                .to_string()
                .contains("closing quote")
        );
    }

    #[test]
    fn json_sequences_are_symbols_numbers_or_vectors() {
        let seq =
            |s: &str| parse_json_seq(&serde_json::from_str(s).unwrap(), Tokens::Words, "input");
        assert_eq!(
            seq(r#""a bc""#).unwrap(),
            RawSeq::Symbols(vec!["a".into(), "bc".into()])
        );
        assert_eq!(
            seq("[1, 2.5]").unwrap(),
            RawSeq::Numbers(vec![vec![1.0], vec![2.5]])
        );
        assert_eq!(seq("[[1, 2], [3, 4]]").unwrap().len(), 2);
        let err = seq("[[1, 2], [3]]").unwrap_err().to_string();
        assert!(
            err.contains("2 numbers like step 0, found 1 at step 1"),
            "{err}"
        );
        let err = seq("{}").unwrap_err().to_string();
        assert!(err.contains("found an object"), "{err}");
    }

    #[test]
    fn a_text_line_without_tabs_predicts_the_next_symbol() {
        let record = text_record(1, "abc", false, Tokens::Chars).unwrap();
        assert_eq!(
            record.target,
            Some(RawSeq::Symbols(vec!["b".into(), "c".into(), END.into()]))
        );
    }
}
