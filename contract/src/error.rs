//! Why a body is not an acceptable order.

use serde_json::error::Category;

/// A body that is not an acceptable order, worded for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// Not JSON at all (or truncated): nothing can be said about any field.
    #[error("the body is not valid JSON ({detail}); send one JSON object")]
    Malformed { detail: String },
    /// Well-formed JSON, but a field is missing, unknown, of the wrong type or out of range.
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl ContractError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Malformed { .. } => None,
            Self::Invalid { field, .. } => Some(field),
        }
    }
}

/// Parses JSON into `T`, turning serde's error into one that names the field.
pub(crate) fn from_json<'de, T: serde::Deserialize<'de>>(
    json: &'de str,
) -> Result<T, ContractError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        // A body that is broken JSON further on is malformed, whatever its first fields say.
        match serde_json::from_str::<serde::de::IgnoredAny>(json) {
            Err(syntax) => ContractError::Malformed {
                detail: syntax.to_string(),
            },
            Ok(_) => from_path_error(err),
        }
    })?;
    // Trailing garbage after the object makes the whole body malformed.
    deserializer.end().map_err(|err| ContractError::Malformed {
        detail: without_position(&err),
    })?;
    Ok(value)
}

fn from_path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ContractError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Data => {
            let problem = without_position(&inner);
            // serde reports a missing field on the enclosing object: name the field itself.
            let named = problem
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name);
            let field = match (path.as_str(), named) {
                (".", Some(name)) => name.to_owned(),
                (".", None) => "body".to_owned(),
                (_, Some(name)) => format!("{path}.{name}"),
                (_, None) => path,
            };
            ContractError::invalid(field, problem)
        }
        Category::Syntax | Category::Eof | Category::Io => ContractError::Malformed {
            detail: inner.to_string(),
        },
    }
}

/// serde_json appends "at line 1 column 42", which means nothing to a field-level problem.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}

/// Deserializes `T` from a JSON object only. serde's derive also accepts a JSON
/// array with the fields in order, which is not part of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectOnly(std::marker::PhantomData))
            .map(Object)
    }
}
