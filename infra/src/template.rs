//! A CloudFormation (or SAM) template as data: [`Document`] is the YAML tree, with
//! CloudFormation's short-form tags such as `!Ref X` kept as [`Value::Tagged`]
//! ([`intrinsic`] names them), and numbers resolved through parameter defaults or
//! bounds the way a deploy would see them.

pub use serde_yaml_ng::Value;

/// Why the template could not be read; the message names the resource and property.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("could not read the SAM template {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the SAM template is not valid YAML")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("the SAM template has no {0}")]
    Missing(String),
    #[error(
        "{0} in the SAM template is not a number (or a !Ref to a parameter with a numeric default)"
    )]
    NotANumber(String),
    #[error(
        "{0} in the SAM template is a !Ref to a parameter without a MaxValue: give the parameter one, so its largest value is known"
    )]
    Unbounded(String),
}

/// A CloudFormation (or SAM) template as a YAML tree.
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
}

impl Document {
    pub fn from_file(path: &str) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            root: serde_yaml_ng::from_str(yaml)?,
        })
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The node at `path` (mapping keys from the top), or an error naming the path.
    pub fn get(&self, path: &[&str]) -> Result<&Value, TemplateError> {
        path.iter()
            .try_fold(&self.root, |node, key| node.get(key))
            .ok_or_else(|| TemplateError::Missing(path.join(".")))
    }

    /// The resources of one `Type` (e.g. `AWS::IAM::Role`), by logical id.
    pub fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(id, resource)| Some((id.as_str()?, resource)))
            .filter(move |(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(kind))
    }

    /// A literal number, or a `!Ref` to a parameter whose `Default` is one: the
    /// value a deploy gets when nobody overrides it.
    pub fn number<N: TryFrom<u64>>(&self, path: &[&str]) -> Result<N, TemplateError> {
        self.resolve_number(path, |parameter| {
            self.get(&["Parameters", parameter, "Default"])
        })
    }

    /// A literal number, or a `!Ref` to a parameter: its `MaxValue`, the largest
    /// value a deploy can give it.
    pub fn largest<N: TryFrom<u64>>(&self, path: &[&str]) -> Result<N, TemplateError> {
        self.resolve_number(path, |parameter| {
            let max = self.get(&["Parameters", parameter, "MaxValue"]);
            max.map_err(|_| TemplateError::Unbounded(path[1..].join(".")))
        })
    }

    /// The number at `path`; a `!Ref`'s through `parameter_value` (name to value).
    fn resolve_number<'a, N: TryFrom<u64>>(
        &'a self,
        path: &[&str],
        parameter_value: impl Fn(&'a str) -> Result<&'a Value, TemplateError>,
    ) -> Result<N, TemplateError> {
        let name = || path[1..].join(".");
        let mut value = self.get(path)?;
        if let Some(parameter) = reference(value) {
            value = parameter_value(parameter)?;
        } else if intrinsic(value).is_some() {
            return Err(TemplateError::NotANumber(name()));
        }
        as_u64(value)
            .and_then(|n| N::try_from(n).ok())
            .ok_or_else(|| TemplateError::NotANumber(name()))
    }
}

/// A number written as a YAML number or a string ("5"), as CloudFormation accepts both.
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A short-form intrinsic function: its tag without the `!` (`Ref`, `GetAtt`,
/// `Sub`, …) and its argument.
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        _ => None,
    }
}

/// The name in a `!Ref Name`.
pub fn reference(value: &Value) -> Option<&str> {
    match intrinsic(value) {
        Some((tag, Value::String(name))) if tag == "Ref" => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "Parameters:\n  W:\n    Type: Number\n    Default: 1\n    MaxValue: 20\n  U:\n    Type: Number\n    Default: 3\nResources:\n  R:\n    Type: AWS::SQS::Queue\n    Properties:\n      A: !Ref W\n      B: !Ref U\n      C: 7\n      D: \"8\"\n      E: !GetAtt X.Arn\n";

    fn path(key: &str) -> [&str; 4] {
        ["Resources", "R", "Properties", key]
    }

    #[test]
    fn a_ref_resolves_to_the_parameter_default() {
        let doc = Document::parse(SMALL).expect("yaml");
        assert_eq!(doc.number::<u64>(&path("A")).expect("default"), 1);
        assert_eq!(doc.number::<u64>(&path("B")).expect("default"), 3);
    }

    #[test]
    fn a_number_may_be_written_as_a_string() {
        let doc = Document::parse(SMALL).expect("yaml");
        assert_eq!(doc.number::<u32>(&path("D")).expect("string number"), 8);
    }

    #[test]
    fn the_largest_value_of_a_ref_is_its_parameters_max_value() {
        let doc = Document::parse(SMALL).expect("yaml");
        assert_eq!(doc.largest::<u64>(&path("A")).expect("max"), 20);
        assert_eq!(doc.largest::<u64>(&path("C")).expect("literal"), 7);
        let err = doc.largest::<u64>(&path("B")).expect_err("no MaxValue");
        assert!(matches!(err, TemplateError::Unbounded(_)), "{err}");
    }

    #[test]
    fn an_intrinsic_other_than_ref_is_not_a_number() {
        let doc = Document::parse(SMALL).expect("yaml");
        let err = doc.number::<u64>(&path("E")).expect_err("a !GetAtt");
        assert!(matches!(err, TemplateError::NotANumber(_)), "{err}");
    }

    #[test]
    fn a_missing_node_is_named_by_its_path() {
        let doc = Document::parse(SMALL).expect("yaml");
        let err = doc.get(&path("Nope")).expect_err("missing");
        assert!(
            err.to_string().contains("Resources.R.Properties.Nope"),
            "{err}"
        );
    }

    #[test]
    fn resources_are_found_by_type_and_short_form_tags_are_named() {
        let doc = Document::parse(SMALL).expect("yaml");
        let found: Vec<&str> = doc
            .resources_of_type("AWS::SQS::Queue")
            .map(|(id, _)| id)
            .collect();
        assert_eq!(found, ["R"]);
        let a = doc.get(&path("A")).expect("A");
        assert_eq!(reference(a), Some("W"));
        let (tag, _) = intrinsic(doc.get(&path("E")).expect("E")).expect("a tag");
        assert_eq!(tag, "GetAtt");
    }
}
