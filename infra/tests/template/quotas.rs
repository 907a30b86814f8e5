//! What a new account's quotas let the template ask for. New accounts have
//! reduced concurrency quotas, raised with use
//! (<https://docs.aws.amazon.com/lambda/latest/dg/limits.html>), and Lambda keeps
//! 100 of an account's concurrency for the functions that reserve none: a function
//! may reserve only the unreserved concurrency minus 100
//! (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html>,
//! "Configuring reserved concurrency"). A reserved concurrency written into the
//! template fails such an account's first deploy, after RDS and RDS Proxy exist.

use infra::{Document, Value, intrinsic, reference};

use crate::helpers::{default_of, template, text};

/// Whether a condition holds when every parameter keeps its default; `None` for
/// what this small reader does not evaluate.
fn holds_by_default(t: &Document, condition: &Value) -> Option<bool> {
    let (tag, argument) = intrinsic(condition)?;
    let list = argument.as_sequence().map(Vec::as_slice);
    match (tag.as_str(), list) {
        ("Equals", Some([a, b])) => Some(scalar_by_default(t, a)? == scalar_by_default(t, b)?),
        ("Not", Some([inner])) => holds_by_default(t, inner).map(|held| !held),
        ("And", Some(all)) => all
            .iter()
            .try_fold(true, |acc, c| Some(acc && holds_by_default(t, c)?)),
        ("Or", Some(any)) => any
            .iter()
            .try_fold(false, |acc, c| Some(acc || holds_by_default(t, c)?)),
        ("Condition", None) => named_condition_holds(t, argument.as_str()?),
        _ => None,
    }
}

fn named_condition_holds(t: &Document, name: &str) -> Option<bool> {
    holds_by_default(t, t.get(&["Conditions", name]).ok()?)
}

fn scalar_by_default(t: &Document, value: &Value) -> Option<String> {
    let value = if reference(value).is_some() {
        default_of(t, value)?
    } else {
        value
    };
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `!If [Condition, value, !Ref AWS::NoValue]` whose condition is false while
/// its parameters keep their defaults: nothing reserved unless the deployer asks.
fn off_by_default(t: &Document, value: &Value) -> bool {
    let Some((tag, Value::Sequence(branches))) = intrinsic(value) else {
        return false;
    };
    let [condition, _, otherwise] = branches.as_slice() else {
        return false;
    };
    tag == "If"
        && reference(otherwise) == Some("AWS::NoValue")
        && named_condition_holds(t, text(condition)) == Some(false)
}

#[test]
fn no_function_reserves_concurrency_unless_a_parameter_off_by_default_asks_for_it() {
    let t = template();
    let mut places: Vec<(String, Option<&Value>)> = vec![(
        "Globals.Function".into(),
        t.get(&["Globals", "Function"]).ok(),
    )];
    for kind in ["AWS::Serverless::Function", "AWS::Lambda::Function"] {
        for (id, resource) in t.resources_of_type(kind) {
            places.push((id.to_owned(), resource.get("Properties")));
        }
    }
    assert!(places.len() > 2, "the template's functions were not found");
    for (place, properties) in places {
        let Some(reserved) = properties.and_then(|p| p.get("ReservedConcurrentExecutions")) else {
            continue;
        };
        assert!(
            off_by_default(&t, reserved),
            "{place}: ReservedConcurrentExecutions {reserved:?} is hard-coded; a new account's \
             reduced concurrency cannot spare it (Lambda keeps 100 unreserved). Leave it out, or \
             make it !If [a condition off by default, N, !Ref AWS::NoValue]"
        );
    }
}

#[test]
fn the_reader_of_conditions_tells_on_from_off() {
    let t = Document::parse(
        "Parameters:\n  Reserve:\n    Type: String\n    Default: \"\"\nConditions:\n  Reserving: !Not [!Equals [!Ref Reserve, \"\"]]\n  Always: !Equals [a, a]\nResources:\n  Off:\n    Type: AWS::Serverless::Function\n    Properties:\n      ReservedConcurrentExecutions: !If [Reserving, !Ref Reserve, !Ref AWS::NoValue]\n  On:\n    Type: AWS::Serverless::Function\n    Properties:\n      ReservedConcurrentExecutions: !If [Always, 1, !Ref AWS::NoValue]\n  Literal:\n    Type: AWS::Serverless::Function\n    Properties:\n      ReservedConcurrentExecutions: 1\n",
    )
    .expect("yaml");
    let reserved = |id: &str| {
        t.get(&[
            "Resources",
            id,
            "Properties",
            "ReservedConcurrentExecutions",
        ])
        .expect("the property")
        .clone()
    };
    assert!(off_by_default(&t, &reserved("Off")));
    assert!(!off_by_default(&t, &reserved("On")));
    assert!(!off_by_default(&t, &reserved("Literal")));
}
