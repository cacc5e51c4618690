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
//! Blank lines are skipped, and a UTF-8 byte-order mark at the start of the file is not
//! part of the first line. A malformed line is an error naming the file, the line, what was
//! expected and what was found; so is a symbol that the vocabularies reserve (`<pad>`, `</s>`,
//! `<unk>`: [`crate::vocab::RESERVED`]), which data may not use: read as data it would
//! silently become padding, an end or an unknown symbol. Numbers must be finite in `f32`
//! (a JSON number beyond about 3.4e38 would become infinity), and vectors at least one
//! number wide.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;

use crate::vocab::{END, RESERVED};

/// Memory per byte of a data file once read: a character symbol is a string of its own
/// (24 bytes and a small allocation), plus its id in the examples.
pub const BYTES_PER_BYTE: u64 = 48;

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
/// An unreadable file, one too large for the memory budget, text that is not UTF-8, or a
/// malformed line: `FILE:LINE: expected ..., found ...`.
pub fn read_records(
    path: &Path,
    format: Option<Format>,
    tokens: Tokens,
    need_target: bool,
) -> Result<Vec<Record>> {
    let text = crate::paths::read_text(path, BYTES_PER_BYTE)?;
    let format = format.unwrap_or_else(|| Format::of(path));
    parse_records(
        &text,
        &path.display().to_string(),
        format,
        tokens,
        need_target,
    )
}

/// Parses the text of a data file in `format`; `origin` names it in errors (`ORIGIN:LINE:
/// ...`). A leading byte-order mark is skipped.
///
/// # Errors
/// As [`read_records`], but for reading.
pub fn parse_records(
    text: &str,
    origin: &str,
    format: Format,
    tokens: Tokens,
    need_target: bool,
) -> Result<Vec<Record>> {
    let text = crate::paths::strip_bom(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let at = |line: usize| format!("{origin}:{line}");
    let records = match format {
        Format::Jsonl => lines
            .map(|(n, l)| jsonl_record(n, l, tokens, need_target).with_context(|| at(n)))
            .collect::<Result<Vec<_>>>()?,
        Format::Csv => {
            let Some((n, header)) = lines.next() else {
                bail!("{origin}: expected a header line, found an empty file");
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
        bail!("{origin}: expected at least one example, found none");
    }
    Ok(records)
}

/// Checks a sequence as read: at least one step, no reserved symbol, finite numbers in
/// vectors of at least one number; `what` names it (`input`, `target`).
///
/// # Errors
/// The first problem, naming the step and, for a reserved symbol, the symbol.
pub fn check_sequence(seq: &RawSeq, what: &str) -> Result<()> {
    if seq.len() == 0 {
        bail!("expected a non-empty {what}, found an empty one");
    }
    match seq {
        RawSeq::Symbols(symbols) => {
            if let Some(t) = symbols.iter().position(String::is_empty) {
                bail!(
                    "expected {what} symbols of at least 1 character, found an empty one at step {t}"
                );
            }
            if let Some((t, symbol)) = symbols
                .iter()
                .enumerate()
                .find(|(_, s)| RESERVED.contains(&s.as_str()))
            {
                bail!(
                    "{what} symbol {symbol:?} at step {t} is reserved ({}: padding, end of sequence, unknown symbol); data may not use it",
                    RESERVED.join(", ")
                );
            }
        }
        RawSeq::Numbers(steps) => {
            for (t, step) in steps.iter().enumerate() {
                if step.is_empty() {
                    bail!(
                        "expected {what} vectors of at least 1 number, found an empty one at step {t}"
                    );
                }
            }
        }
    }
    Ok(())
}

fn non_empty(seq: RawSeq, what: &str) -> Result<RawSeq> {
    check_sequence(&seq, what)?;
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
    if let Some((t, x)) = first_non_finite(value) {
        bail!(
            "\"{field}\": expected finite numbers that fit in 32 bits (at most about 3.4e38 in size), found {x} at step {t}"
        );
    }
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

/// The first number of a JSON sequence (numbers or arrays of numbers) that is not finite
/// once read as `f32`, with its step.
fn first_non_finite(value: &Json) -> Option<(usize, &serde_json::Number)> {
    let items = value.as_array()?;
    items.iter().enumerate().find_map(|(t, item)| {
        let finite = |n: &serde_json::Number| n.as_f64().is_some_and(|x| (x as f32).is_finite());
        match item {
            Json::Number(n) if !finite(n) => Some((t, n)),
            Json::Array(xs) => xs.iter().find_map(|x| match x {
                Json::Number(n) if !finite(n) => Some((t, n)),
                _ => None,
            }),
            _ => None,
        }
    })
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

    fn parse(text: &str, format: Format, tokens: Tokens) -> Result<Vec<Record>> {
        parse_records(text, "d", format, tokens, true)
    }

    fn error(text: &str, format: Format, tokens: Tokens) -> String {
        format!("{:#}", parse(text, format, tokens).unwrap_err())
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_symbol() {
        let records = parse("\u{feff}ab\tcd\n", Format::Text, Tokens::Chars).unwrap();
        assert_eq!(
            records[0].input,
            RawSeq::Symbols(vec!["a".into(), "b".into()])
        );
        let records = parse("\u{feff}input,target\nab,cd\n", Format::Csv, Tokens::Chars).unwrap();
        assert_eq!(records.len(), 1);
        let records = parse(
            "\u{feff}{\"input\": \"a\", \"target\": \"b\"}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert_eq!(records.unwrap()[0].line, 1);
    }

    #[test]
    fn reserved_symbols_in_data_are_errors_naming_symbol_file_and_line() {
        let err = error("a b\tc d\nx <pad>\ty z\n", Format::Text, Tokens::Words);
        assert!(
            err.starts_with("d:2: input symbol \"<pad>\" at step 1 is reserved"),
            "{err}"
        );
        let err = error(
            "{\"input\": [\"a\"], \"target\": [\"</s>\"]}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert!(
            err.starts_with("d:1: target symbol \"</s>\" at step 0 is reserved"),
            "{err}"
        );
        let err = error("input,target\na,b\nc,<unk> d\n", Format::Csv, Tokens::Words);
        assert!(err.starts_with("d:3: target symbol \"<unk>\""), "{err}");
        // One character at a time, `<pad>` is five ordinary symbols.
        assert!(parse("<pad>\t<unk>\n", Format::Text, Tokens::Chars).is_ok());
        // The end symbol that a next-symbol target ends with is the reader's, not the data's.
        assert!(parse("a b c\n", Format::Text, Tokens::Words).is_ok());
        let err = error(
            "{\"input\": [\"a\", \"\"], \"target\": \"b\"}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert!(
            err.contains("input symbols of at least 1 character, found an empty one at step 1"),
            "{err}"
        );
    }

    #[test]
    fn numbers_must_be_finite_in_f32_and_vectors_at_least_one_wide() {
        let err = error(
            "{\"input\": [0.5, 1e39], \"target\": \"a\"}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert!(
            err.starts_with("d:1: \"input\": expected finite numbers that fit in 32 bits"),
            "{err}"
        );
        assert!(err.ends_with("found 1e+39 at step 1"), "{err}");
        let err = error(
            "{\"input\": [[1, 2], [3, -4e38]], \"target\": \"a\"}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert!(err.ends_with("found -4e+38 at step 1"), "{err}");
        let err = error(
            "{\"input\": [[]], \"target\": \"a\"}",
            Format::Jsonl,
            Tokens::Chars,
        );
        assert!(
            err.contains(
                "expected input vectors of at least 1 number, found an empty one at step 0"
            ),
            "{err}"
        );
        let records = parse(
            "{\"input\": [[3.4e38]], \"target\": \"a\"}",
            Format::Jsonl,
            Tokens::Chars,
        )
        .unwrap();
        assert_eq!(records[0].input, RawSeq::Numbers(vec![vec![3.4e38]]));
    }
}
