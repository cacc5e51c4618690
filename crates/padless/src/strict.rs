//! Strict reading of tagged configs (`{"type": "lstm", "units": 8}`): every key must be a
//! field of the config type, and an unknown key or type is reported with the nearest known
//! name, so a misspelt option (`retrun_sequences`) fails instead of being dropped.
//!
//! The configs are read through `serde_json::Value` (any serde format, JSON or TOML, reads
//! into it), and each config type's fields are the list its derived `Deserialize` declares.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value as Json};

/// The field names `T`'s derived `Deserialize` reads: the list it hands to
/// `deserialize_struct`, captured by a deserializer that stops there. Empty for a type that
/// is not a struct.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always ends in its own error, after recording the fields.
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The name in `known` nearest to `found` by edit distance (a transposition counts as one
/// edit), if it is close enough to be a likely misspelling: at most a third of the longer
/// name's length, and at least 1.
pub(crate) fn nearest<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|&name| (strsim::damerau_levenshtein(found, name), name))
        .filter(|&(distance, name)| distance <= (found.len().max(name.len()) / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name)
}

/// The error for an unknown key or type `found` in `context` (`layer 2 (lstm)`): the nearest
/// known name, or all of them when none is near.
pub(crate) fn unknown(what: &str, found: &str, context: &str, known: &[&str]) -> String {
    match nearest(found, known) {
        Some(name) => format!("unknown {what} \"{found}\" in {context}; did you mean \"{name}\"?"),
        None if known.is_empty() => {
            format!("unknown {what} \"{found}\" in {context}; it takes none")
        }
        None => format!(
            "unknown {what} \"{found}\" in {context}; expected one of {}",
            known
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Splits a tagged object (`{"type": "lstm", ...}`) into its tag and the other keys.
pub(crate) fn split_tag(
    json: Json,
    tag: &str,
    context: &str,
) -> Result<(String, Map<String, Json>), String> {
    let Json::Object(mut object) = json else {
        return Err(format!(
            "expected an object with a \"{tag}\" key for {context}, found {json}"
        ));
    };
    match object.remove(tag) {
        Some(Json::String(name)) => Ok((name, object)),
        Some(other) => Err(format!(
            "expected a string \"{tag}\" in {context}, found {other}"
        )),
        None => Err(format!("missing \"{tag}\" in {context}")),
    }
}

/// `T` read from `object` after checking that every key is one of its fields; `context`
/// (`layer 2 (lstm)`) names it in errors.
pub(crate) fn from_object<T: DeserializeOwned>(
    object: Map<String, Json>,
    context: &str,
) -> Result<T, String> {
    let fields = field_names::<T>();
    if let Some(key) = object.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(unknown("field", key, context, fields));
    }
    serde_json::from_value(Json::Object(object)).map_err(|e| format!("{e} in {context}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Options {
        units: usize,
        return_sequences: bool,
        return_state: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(transparent)]
    #[allow(dead_code)]
    struct Wrapped(Options);

    #[test]
    fn field_names_are_those_the_derive_declares() {
        let expected = ["units", "return_sequences", "return_state"];
        assert_eq!(field_names::<Options>(), expected);
        assert_eq!(field_names::<Wrapped>(), expected);
        assert!(field_names::<usize>().is_empty());
    }

    #[test]
    fn the_nearest_name_is_suggested_only_when_close() {
        let known = ["units", "return_sequences", "return_state", "use_bias"];
        assert_eq!(
            nearest("retrun_sequences", &known),
            Some("return_sequences")
        );
        assert_eq!(nearest("return_states", &known), Some("return_state"));
        assert_eq!(nearest("unit", &known), Some("units"));
        assert_eq!(nearest("no_bias", &known), None);
        assert_eq!(nearest("dropout", &known), None);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_context_and_the_nearest_field() {
        let object = serde_json::json!({"units": 3, "retrun_sequences": true});
        let Json::Object(object) = object else {
            unreachable!()
        };
        let err = from_object::<Options>(object, "layer 2 (lstm)")
            .err()
            .unwrap();
        assert_eq!(
            err,
            "unknown field \"retrun_sequences\" in layer 2 (lstm); did you mean \"return_sequences\"?"
        );
        let err = unknown("field", "colour", "layer 0 (drop_mask)", &[]);
        assert_eq!(
            err,
            "unknown field \"colour\" in layer 0 (drop_mask); it takes none"
        );
    }
}
