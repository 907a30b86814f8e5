//! The HTTPS listener of `infra/template.yaml` as data: its rules in priority
//! order, the default rule last, each with its conditions and actions, read
//! with `infra`' reader so that the local load balancer cannot drift
//! from the deployed one. Evaluation follows the ALB user guide: lowest
//! priority first, the default rule when none matches
//! (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-rules.html>);
//! path patterns are case-sensitive, `*` matches any run of characters and
//! `?` exactly one, compared to the path only, not the query string
//! (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-elasticloadbalancingv2-listenerrule-pathpatternconfig.html>).

use std::time::Duration;

use infra::{Document, TemplateError, Value, as_u64, intrinsic, reference};

/// The listener local-alb plays: the one that signs customers in.
pub const LISTENER: &str = "HttpsListener";

/// The ALB's defaults for the authenticate actions
/// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-authenticate-users.html>).
const DEFAULT_COOKIE_NAME: &str = "AWSELBAuthSessionCookie";
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(604_800);

/// What an authenticate action does with a request that has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// Sends the browser to sign in (the ALB's default).
    Authenticate,
    /// Answers 401.
    Deny,
    /// Forwards without claims.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub on_unauthenticated: OnUnauthenticated,
    /// The session cookie's name; the ALB appends `-0`, `-1`, … to it.
    pub cookie_name: String,
    pub session_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Authenticate(Authenticate),
    /// To a target group, by its logical id (`ProducerTargetGroup`).
    Forward(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's logical id, or the listener's for the default rule.
    pub name: String,
    /// Any of these path patterns; empty matches every path.
    pub paths: Vec<String>,
    /// Any of these methods; empty matches every method.
    pub methods: Vec<String>,
    /// In their `Order`.
    pub actions: Vec<Action>,
}

/// Why the template's listener cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{rule} in the SAM template: {what}")]
    Unsupported { rule: String, what: String },
}

/// The rules of [`LISTENER`], in the order the ALB evaluates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub rules: Vec<Rule>,
}

impl Listener {
    pub fn from_document(t: &Document) -> Result<Self, RulesError> {
        let mut rules: Vec<(u64, Rule)> = Vec::new();
        for (id, _) in t.resources_of_type("AWS::ElasticLoadBalancingV2::ListenerRule") {
            let properties = t.get(&["Resources", id, "Properties"])?;
            if properties.get("ListenerArn").and_then(reference) != Some(LISTENER) {
                continue;
            }
            let unsupported = |what: &str| RulesError::Unsupported {
                rule: id.to_owned(),
                what: what.to_owned(),
            };
            let priority = properties
                .get("Priority")
                .and_then(as_u64)
                .ok_or_else(|| unsupported("no literal Priority"))?;
            let mut rule = Rule {
                name: id.to_owned(),
                paths: Vec::new(),
                methods: Vec::new(),
                actions: actions(id, properties.get("Actions"))?,
            };
            for condition in sequence(properties.get("Conditions")) {
                let field = condition.get("Field").and_then(Value::as_str);
                let (config, into) = match field {
                    Some("path-pattern") => ("PathPatternConfig", &mut rule.paths),
                    Some("http-request-method") => ("HttpRequestMethodConfig", &mut rule.methods),
                    _ => {
                        return Err(unsupported(&format!(
                            "condition {field:?} is not played locally"
                        )));
                    }
                };
                let values = condition
                    .get(config)
                    .and_then(|config| config.get("Values"))
                    .or_else(|| condition.get("Values"));
                into.extend(
                    sequence(values)
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned)),
                );
            }
            rules.push((priority, rule));
        }
        rules.sort_by_key(|(priority, _)| *priority);
        let default = t.get(&["Resources", LISTENER, "Properties", "DefaultActions"])?;
        let mut rules: Vec<Rule> = rules.into_iter().map(|(_, rule)| rule).collect();
        rules.push(Rule {
            name: LISTENER.to_owned(),
            paths: Vec::new(),
            methods: Vec::new(),
            actions: actions(LISTENER, Some(default))?,
        });
        Ok(Self { rules })
    }

    /// The first rule whose conditions `method` and `path` meet (the default rule at worst).
    pub fn rule_for(&self, method: &str, path: &str) -> &Rule {
        self.rules
            .iter()
            .find(|rule| {
                (rule.paths.is_empty()
                    || rule
                        .paths
                        .iter()
                        .any(|p| matches(p.as_bytes(), path.as_bytes())))
                    && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
            })
            .unwrap_or_else(|| &self.rules[self.rules.len() - 1])
    }

    /// Every target group some rule forwards to.
    pub fn target_groups(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|rule| &rule.actions)
            .filter_map(|action| match action {
                Action::Forward(group) => Some(group.as_str()),
                Action::Authenticate(_) => None,
            })
    }

    /// The session settings of the first authenticate action.
    pub fn authenticate(&self) -> Option<&Authenticate> {
        self.rules
            .iter()
            .flat_map(|rule| &rule.actions)
            .find_map(|action| match action {
                Action::Authenticate(auth) => Some(auth),
                Action::Forward(_) => None,
            })
    }
}

/// The Lambda target groups of the template, each with its
/// `lambda.multi_value_headers.enabled` (off unless the template says `true`).
pub fn lambda_target_groups(t: &Document) -> Vec<(String, bool)> {
    t.resources_of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
        .filter_map(|(id, resource)| {
            let properties = resource.get("Properties")?;
            (properties.get("TargetType").and_then(Value::as_str) == Some("lambda")).then(|| {
                let multi_value = sequence(properties.get("TargetGroupAttributes"))
                    .iter()
                    .any(|attribute| {
                        attribute.get("Key").and_then(Value::as_str)
                            == Some("lambda.multi_value_headers.enabled")
                            && attribute.get("Value").is_some_and(|value| {
                                value.as_str() == Some("true") || value.as_bool() == Some(true)
                            })
                    });
                (id.to_owned(), multi_value)
            })
        })
        .collect()
}

fn sequence(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The actions in their `Order`. Of an `!If [condition, a, b]`, the first
/// branch: the template writes one per identity provider (OIDC or Cognito),
/// and locally both are the development sign-in page.
fn actions(rule: &str, list: Option<&Value>) -> Result<Vec<Action>, RulesError> {
    let unsupported = |what: String| RulesError::Unsupported {
        rule: rule.to_owned(),
        what,
    };
    let mut ordered = Vec::new();
    for (index, action) in sequence(list).iter().enumerate() {
        let action = match intrinsic(action) {
            Some((tag, args)) if tag == "If" => sequence(Some(args))
                .get(1)
                .ok_or_else(|| unsupported("an !If without branches".into()))?,
            _ => action,
        };
        let order = action.get("Order").and_then(as_u64).unwrap_or(index as u64);
        let kind = action
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let parsed = match kind {
            "forward" => Action::Forward(
                action
                    .get("TargetGroupArn")
                    .and_then(reference)
                    .ok_or_else(|| unsupported("a forward without !Ref TargetGroupArn".into()))?
                    .to_owned(),
            ),
            "authenticate-cognito" | "authenticate-oidc" => {
                let config = action
                    .get("AuthenticateCognitoConfig")
                    .or_else(|| action.get("AuthenticateOidcConfig"));
                let setting = |name: &str| config.and_then(|c| c.get(name));
                let on_unauthenticated =
                    match setting("OnUnauthenticatedRequest").and_then(Value::as_str) {
                        None | Some("authenticate") => OnUnauthenticated::Authenticate,
                        Some("deny") => OnUnauthenticated::Deny,
                        Some("allow") => OnUnauthenticated::Allow,
                        Some(other) => {
                            return Err(unsupported(format!("OnUnauthenticatedRequest {other:?}")));
                        }
                    };
                Action::Authenticate(Authenticate {
                    on_unauthenticated,
                    cookie_name: setting("SessionCookieName")
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_COOKIE_NAME)
                        .to_owned(),
                    session_timeout: setting("SessionTimeout")
                        .and_then(as_u64)
                        .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_secs),
                })
            }
            other => {
                return Err(unsupported(format!(
                    "action type {other:?} is not played locally"
                )));
            }
        };
        ordered.push((order, parsed));
    }
    ordered.sort_by_key(|(order, _)| *order);
    Ok(ordered.into_iter().map(|(_, action)| action).collect())
}

/// An ALB path pattern: `*` any run of characters, `?` exactly one.
fn matches(pattern: &[u8], path: &[u8]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            matches(rest, path)
                || path
                    .split_first()
                    .is_some_and(|(_, tail)| matches(pattern, tail))
        }
        (Some((b'?', rest)), Some((_, tail))) => matches(rest, tail),
        (Some((p, rest)), Some((c, tail))) if p == c => matches(rest, tail),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");

    fn listener() -> Listener {
        Listener::from_document(&Document::from_file(TEMPLATE).expect("template")).expect("rules")
    }

    #[test]
    fn path_patterns_match_as_the_alb_documents() {
        assert!(matches(b"/orders/*", b"/orders/3f0c"));
        assert!(matches(b"/orders/*", b"/orders/"));
        assert!(!matches(b"/orders/*", b"/orders"));
        assert!(matches(b"/a?c", b"/abc"));
        assert!(!matches(b"/a?c", b"/ac"));
        assert!(!matches(b"/Me", b"/me"), "case-sensitive");
    }

    #[test]
    fn the_template_s_api_answers_401_its_page_signs_in_and_its_probes_are_public() {
        let listener = listener();
        let authenticate = |method: &str, path: &str| {
            listener
                .rule_for(method, path)
                .actions
                .iter()
                .find_map(|action| match action {
                    Action::Authenticate(auth) => Some(auth.on_unauthenticated),
                    Action::Forward(_) => None,
                })
        };
        let forwards_to = |method: &str, path: &str| -> String {
            listener
                .rule_for(method, path)
                .actions
                .iter()
                .find_map(|action| match action {
                    Action::Forward(group) => Some(group.clone()),
                    Action::Authenticate(_) => None,
                })
                .expect("a forward")
        };
        for path in ["/orders", "/orders/3f0c1b6e", "/me"] {
            assert_eq!(
                authenticate("POST", path),
                Some(OnUnauthenticated::Deny),
                "{path}"
            );
        }
        for path in ["/", "/sign-out", "/anything"] {
            assert_eq!(
                authenticate("GET", path),
                Some(OnUnauthenticated::Authenticate),
                "{path}"
            );
        }
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/catalogue",
            "/app.js",
            "/app.css",
            "/favicon.svg",
        ] {
            assert_eq!(authenticate("GET", path), None, "{path} is public");
        }
        // GET /orders* goes to the status function's Lambda target group, as
        // the template's StatusRule says; everything else to the producer.
        for path in ["/orders", "/orders/3f0c1b6e"] {
            assert_eq!(
                authenticate("GET", path),
                Some(OnUnauthenticated::Deny),
                "{path}"
            );
            assert_eq!(forwards_to("GET", path), "StatusTargetGroup", "{path}");
            assert_eq!(forwards_to("POST", path), "ProducerTargetGroup", "{path}");
        }
        assert_eq!(
            lambda_target_groups(&Document::from_file(TEMPLATE).expect("template")),
            [("StatusTargetGroup".to_owned(), false)]
        );
        assert_eq!(
            listener.target_groups().collect::<BTreeSet<_>>(),
            ["ProducerTargetGroup", "StatusTargetGroup"].into()
        );
        let session = listener.authenticate().expect("an authenticate action");
        assert_eq!(session.cookie_name, "AWSELBAuthSessionCookie");
        assert_eq!(session.session_timeout, Duration::from_secs(604_800));
    }
}
