//! The JSON driver: parses a body into a contract type and, when that fails,
//! names the field at fault.
//!
//! A body that parses straight into the type is done in one pass. Otherwise it
//! works in two steps to say why. serde_json first reads the body into a small tree
//! ([`Json`]), so that every syntax error is found before any field is judged
//! (a body broken further on is malformed, whatever its first fields say).
//! The type is then read from the tree with [`FieldError`], an error type of
//! our own: a missing field arrives as data ([`FieldError::Missing`]), not as
//! text to pick apart, and serde_path_to_error supplies the path to it.

use std::fmt;

use serde::de::{
    self, Deserialize, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
    value::{MapDeserializer, SeqDeserializer},
};

use crate::error::ContractError;

/// Parses JSON into `T`; the error names the field at fault.
pub(crate) fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, ContractError> {
    // Nearly every body is valid: one direct pass. Only a failure pays for the
    // tree below, which decides the error (a body the direct pass accepts, the
    // tree reads the same).
    if let Ok(value) = serde_json::from_str(json) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    // The tree takes any JSON, so whatever fails here is the syntax.
    let tree = Json::deserialize(&mut deserializer).map_err(ContractError::malformed)?;
    // Trailing garbage after the object makes the whole body malformed.
    deserializer.end().map_err(ContractError::malformed)?;
    serde_path_to_error::deserialize(&tree).map_err(|err| {
        let path = err.path().to_string();
        let problem = err.into_inner();
        ContractError::invalid(field_name(&path, &problem), problem.to_string())
    })
}

/// The field an error is about. serde reports a missing field on the enclosing
/// object, so its name is added to the path; an error on the body itself
/// (path ".") is about "body".
fn field_name(path: &str, problem: &FieldError) -> String {
    match (path, problem) {
        (".", FieldError::Missing(name)) => (*name).to_owned(),
        (".", _) => "body".to_owned(),
        (_, FieldError::Missing(name)) => format!("{path}.{name}"),
        (_, _) => path.to_owned(),
    }
}

/// Why a well-formed body does not fit the type, worded as serde_json words it
/// (the producer shows it to clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldError {
    /// A required field is absent from its object.
    Missing(&'static str),
    /// Anything else: wrong type, out of range, unknown field, a parse failure.
    Other(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "missing field `{name}`"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::Other(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing(field)
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::Other(format!(
            "invalid type: {}, expected {expected}",
            Shown(unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::Other(format!(
            "invalid value: {}, expected {expected}",
            Shown(unexpected)
        ))
    }
}

/// A value in an error message: JSON's `null` rather than serde's "unit value".
struct Shown<'a>(Unexpected<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Unit => f.write_str("null"),
            other => other.fmt(f),
        }
    }
}

/// A parsed JSON document. Objects keep every entry in order, duplicates
/// included, so that a duplicate field is still refused as one.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Signed(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Json, E> {
        Ok(Json::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

/// Reads a type from the tree, handing the visitor what serde_json would have.
impl<'de> Deserializer<'de> for &'de Json {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self {
            Json::Null => visitor.visit_unit(),
            Json::Bool(value) => visitor.visit_bool(*value),
            Json::Unsigned(value) => visitor.visit_u64(*value),
            Json::Signed(value) => visitor.visit_i64(*value),
            Json::Float(value) => visitor.visit_f64(*value),
            Json::String(value) => visitor.visit_str(value),
            Json::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Json::Object(entries) => {
                let mut map =
                    MapDeserializer::new(entries.iter().map(|(key, value)| (key.as_str(), value)));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, FieldError> for &'de Json {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read by the derive only; the tests look at the errors.
    struct Outer {
        name: String,
        inner: Vec<Object<Inner>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn invalid(json: &str) -> (String, String) {
        match from_json::<Object<Outer>>(json) {
            Err(ContractError::Invalid { field, problem }) => (field, problem),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_field_is_named_by_its_own_path_not_its_objects() {
        assert_eq!(
            invalid(r#"{"inner":[]}"#),
            ("name".into(), "missing field `name`".into())
        );
        assert_eq!(
            invalid(r#"{"name":"n","inner":[{}]}"#),
            ("inner[0].count".into(), "missing field `count`".into())
        );
    }

    #[test]
    fn a_wrong_type_is_worded_as_serde_json_words_it() {
        assert_eq!(
            invalid(r#"{"name":null,"inner":[]}"#),
            (
                "name".into(),
                "invalid type: null, expected a string".into()
            )
        );
        assert_eq!(
            invalid(r#"{"name":"n","inner":[{"count":-1}]}"#),
            (
                "inner[0].count".into(),
                "invalid value: integer `-1`, expected u32".into()
            )
        );
    }

    #[test]
    fn a_duplicate_field_is_still_refused() {
        let (field, problem) = invalid(r#"{"name":"a","name":"b","inner":[]}"#);
        assert_eq!(field, "body");
        assert_eq!(problem, "duplicate field `name`");
    }

    #[test]
    fn an_error_on_the_body_itself_is_about_the_body() {
        assert_eq!(invalid("[]").0, "body");
    }

    #[test]
    fn broken_json_is_malformed_even_after_valid_fields() {
        let err = from_json::<Object<Outer>>(r#"{"name":"n","inner":[]"#).expect_err("truncated");
        assert!(matches!(err, ContractError::Malformed { .. }), "{err:?}");
        let err = from_json::<Object<Outer>>(r#"{"name":7,"inner":[} "#).expect_err("broken");
        assert!(matches!(err, ContractError::Malformed { .. }), "{err:?}");
    }
}
