//! The JSON driver: parses a body into a contract type and, when that fails,
//! names the field at fault (serde_path_to_error finds the path).

use serde::de::{DeserializeOwned, IgnoredAny};

use crate::error::ContractError;

/// Parses JSON into `T`; the error names the field at fault.
pub(crate) fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, ContractError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let err = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            return deserializer
                .end()
                .map(|()| value)
                .map_err(ContractError::Malformed);
        }
        Err(err) => err,
    };
    // A body broken anywhere is malformed, whatever its first fields say.
    serde_json::from_str::<IgnoredAny>(json).map_err(ContractError::Malformed)?;
    let path = err.path().to_string();
    let err = err.into_inner();
    if !err.is_data() {
        // A number out of range, which the syntax check does not read.
        return Err(ContractError::Malformed(err));
    }
    // The parser's words without its position, which the field names better.
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let problem = text.strip_suffix(&position).unwrap_or(&text).to_owned();
    Err(ContractError::invalid(field_name(&path, &problem), problem))
}

/// The field an error is about. serde reports a missing field on the enclosing
/// object, so its name is added to the path; an error on the body itself
/// (path ".") is about "body".
fn field_name(path: &str, problem: &str) -> String {
    let missing = problem
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (_, None) => path.to_owned(),
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
