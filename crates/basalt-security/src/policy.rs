//! IAM-style policies: JSON documents of statements that allow or deny actions on resources,
//! and their evaluation — default deny, any matching allow grants, any matching deny wins —
//! with an explanation of which statement decided.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecurityError};

/// A policy document, as IAM writes them:
///
/// ```json
/// {"Version": "2012-10-17",
///  "Statement": [{"Sid": "ReadHandbook", "Effect": "Allow",
///                 "Action": ["kb:Search", "kb:Answer"], "Resource": "basalt:*:kb/handbook"}]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Statement {
    /// A name for the statement, reported when it decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    /// Action patterns: `kb:Search`, `kb:*`, `*`.
    #[serde(deserialize_with = "one_or_many")]
    pub action: Vec<String>,
    /// Resource patterns: `basalt:acme:kb/handbook`, `basalt:acme:kb/*`, `*`.
    #[serde(deserialize_with = "one_or_many")]
    pub resource: Vec<String>,
    /// `{"StringEquals": {"basalt:Tenant": "acme"}}`: every operator, every key must hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values,
        }
    }
}

/// A value or a list of values. Going through `Value` keeps the inner error ("unknown variant
/// `Maybe`") that an untagged enum would replace with "did not match any variant".
fn one_or_many<'de, T, D>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    T: serde::de::DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Array(values) => values
            .into_iter()
            .map(|value| serde_json::from_value(value).map_err(D::Error::custom))
            .collect(),
        value => Ok(vec![
            serde_json::from_value(value).map_err(D::Error::custom)?,
        ]),
    }
}

/// Condition operators Basalt understands.
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
];

impl PolicyDocument {
    /// Parses and checks a policy: statements present, actions and resources non-empty,
    /// known condition operators.
    pub fn parse(json: &str) -> Result<Self> {
        let document: PolicyDocument =
            serde_json::from_str(json).map_err(|error| SecurityError::BadPolicy {
                message: error.to_string(),
            })?;
        document.validate()?;
        Ok(document)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(SecurityError::BadPolicy { message });
        if self.statement.is_empty() {
            return bad("a policy needs at least one statement".into());
        }
        for (index, statement) in self.statement.iter().enumerate() {
            let name = statement.sid.clone().unwrap_or_else(|| format!("#{index}"));
            if statement.action.is_empty() || statement.action.iter().any(String::is_empty) {
                return bad(format!("statement {name}: Action must name actions"));
            }
            if statement.resource.is_empty() || statement.resource.iter().any(String::is_empty) {
                return bad(format!("statement {name}: Resource must name resources"));
            }
            for operator in statement.condition.keys() {
                if !OPERATORS.contains(&operator.as_str()) {
                    return bad(format!(
                        "statement {name}: unknown condition operator {operator:?}; use {}",
                        OPERATORS.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A request to authorize: who, what, on which resource, with what context (condition keys
/// like `basalt:Tenant`, `basalt:PrincipalName`).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub action: &'a str,
    pub resource: &'a str,
    pub context: &'a BTreeMap<String, String>,
}

/// Which statement of which policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRef {
    pub policy: String,
    /// The statement's `Sid`, or its position (`#0`, `#1`, …).
    pub statement: String,
}

/// The outcome of an evaluation, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// `explicit_deny`, `allow`, or `implicit_deny` (no statement matched).
    pub reason: &'static str,
    /// The deciding statement (none for an implicit deny).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<StatementRef>,
}

impl Decision {
    /// One line for people: "allowed by handbook-readers/ReadHandbook".
    pub fn explain(&self) -> String {
        match (&self.decided_by, self.allowed) {
            (Some(by), true) => format!("allowed by {}/{}", by.policy, by.statement),
            (Some(by), false) => format!("denied explicitly by {}/{}", by.policy, by.statement),
            (None, _) => "denied: no statement allows it (default deny)".into(),
        }
    }
}

/// Evaluates `request` against named policies: an explicit deny anywhere wins, else an allow
/// anywhere grants, else the request is denied.
pub fn evaluate<'p>(
    policies: impl IntoIterator<Item = (&'p str, &'p PolicyDocument)>,
    request: &Request<'_>,
) -> Decision {
    let mut allowed_by = None;
    for (name, policy) in policies {
        for (index, statement) in policy.statement.iter().enumerate() {
            if !statement_matches(statement, request) {
                continue;
            }
            let by = StatementRef {
                policy: name.to_owned(),
                statement: statement.sid.clone().unwrap_or_else(|| format!("#{index}")),
            };
            match statement.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        reason: "explicit_deny",
                        decided_by: Some(by),
                    };
                }
                Effect::Allow => {
                    allowed_by.get_or_insert(by);
                }
            }
        }
    }
    match allowed_by {
        Some(by) => Decision {
            allowed: true,
            reason: "allow",
            decided_by: Some(by),
        },
        None => Decision {
            allowed: false,
            reason: "implicit_deny",
            decided_by: None,
        },
    }
}

fn statement_matches(statement: &Statement, request: &Request<'_>) -> bool {
    // Actions compare case-insensitively, as IAM's do; resources exactly.
    let action = request.action.to_ascii_lowercase();
    statement
        .action
        .iter()
        .any(|pattern| wildcard_match(&pattern.to_ascii_lowercase(), &action))
        && statement
            .resource
            .iter()
            .any(|pattern| wildcard_match(pattern, request.resource))
        && statement.condition.iter().all(|(operator, tests)| {
            tests.iter().all(|(key, expected)| {
                let actual = request.context.get(key).map(String::as_str);
                condition_holds(operator, actual, expected.values())
            })
        })
}

fn condition_holds(operator: &str, actual: Option<&str>, expected: &[String]) -> bool {
    let any = |test: &dyn Fn(&str, &str) -> bool| {
        actual.is_some_and(|actual| expected.iter().any(|value| test(value, actual)))
    };
    match operator {
        "StringEquals" => any(&|value, actual| value == actual),
        "StringNotEquals" => !any(&|value, actual| value == actual),
        "StringLike" => any(&wildcard_match),
        "StringNotLike" => !any(&wildcard_match),
        // Unknown operators are refused when the policy is stored; never match one here.
        _ => false,
    }
}

/// `*` matches any run of characters (also none), `?` exactly one.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> PolicyDocument {
        PolicyDocument::parse(json).unwrap_or_else(|error| panic!("{error}: {json}"))
    }

    /// One row: policies, the request, and the expected decision.
    fn check(policies: &[(&str, &str)], action: &str, resource: &str, expected: (bool, &str)) {
        let parsed: Vec<(String, PolicyDocument)> = policies
            .iter()
            .map(|(name, json)| ((*name).to_owned(), policy(json)))
            .collect();
        let context = BTreeMap::from([
            ("basalt:Tenant".to_owned(), "acme".to_owned()),
            ("basalt:PrincipalName".to_owned(), "alice".to_owned()),
        ]);
        let decision = evaluate(
            parsed.iter().map(|(name, policy)| (name.as_str(), policy)),
            &Request {
                action,
                resource,
                context: &context,
            },
        );
        assert_eq!(
            (decision.allowed, decision.reason),
            expected,
            "{action} on {resource}: {}",
            decision.explain()
        );
    }

    const READ_HANDBOOK: &str = r#"{"Statement": {"Sid": "Read", "Effect": "Allow",
        "Action": ["kb:Search", "kb:Answer"], "Resource": "basalt:acme:kb/handbook"}}"#;
    const ALL_KBS: &str = r#"{"Statement": [{"Effect": "Allow", "Action": "kb:*",
        "Resource": "basalt:acme:kb/*"}]}"#;
    const NO_DELETE: &str = r#"{"Statement": [{"Sid": "NoDelete", "Effect": "Deny",
        "Action": ["kb:Delete*"], "Resource": "*"}]}"#;
    const TENANT_ONLY: &str = r#"{"Statement": [{"Effect": "Allow", "Action": "*",
        "Resource": "*", "Condition": {"StringEquals": {"basalt:Tenant": ["acme", "acme-eu"]}}}]}"#;
    const NOT_ALICE: &str = r#"{"Statement": [{"Effect": "Allow", "Action": "*",
        "Resource": "*", "Condition": {"StringNotLike": {"basalt:PrincipalName": "al*"}}}]}"#;

    #[test]
    fn allow_deny_wildcards_and_precedence() {
        let read = [("read", READ_HANDBOOK)];
        check(
            &read,
            "kb:Search",
            "basalt:acme:kb/handbook",
            (true, "allow"),
        );
        check(
            &read,
            "KB:search",
            "basalt:acme:kb/handbook",
            (true, "allow"),
        );
        check(
            &read,
            "kb:Search",
            "basalt:acme:kb/payroll",
            (false, "implicit_deny"),
        );
        check(
            &read,
            "kb:Ingest",
            "basalt:acme:kb/handbook",
            (false, "implicit_deny"),
        );
        check(
            &[],
            "kb:Search",
            "basalt:acme:kb/handbook",
            (false, "implicit_deny"),
        );

        let broad = [("all", ALL_KBS), ("no-delete", NO_DELETE)];
        check(
            &broad,
            "kb:Ingest",
            "basalt:acme:kb/payroll",
            (true, "allow"),
        );
        check(
            &broad,
            "kb:DeleteDocument",
            "basalt:acme:kb/payroll",
            (false, "explicit_deny"),
        );
        check(
            &broad,
            "kb:Delete",
            "basalt:acme:kb/payroll",
            (false, "explicit_deny"),
        );
        check(
            &broad,
            "kb:Search",
            "basalt:other:kb/payroll",
            (false, "implicit_deny"),
        );
        check(
            &broad,
            "admin:ManageKeys",
            "basalt:acme:key/k1",
            (false, "implicit_deny"),
        );
        // Order does not matter: a deny listed first or last wins the same.
        let reversed = [("no-delete", NO_DELETE), ("all", ALL_KBS)];
        check(
            &reversed,
            "kb:Delete",
            "basalt:acme:kb/x",
            (false, "explicit_deny"),
        );

        let conditioned = [("tenant", TENANT_ONLY)];
        check(
            &conditioned,
            "kb:Search",
            "basalt:acme:kb/x",
            (true, "allow"),
        );
        let negated = [("not-alice", NOT_ALICE)];
        check(
            &negated,
            "kb:Search",
            "basalt:acme:kb/x",
            (false, "implicit_deny"),
        );
    }

    #[test]
    fn the_deciding_statement_is_named() {
        let parsed = [("no-delete", policy(NO_DELETE)), ("all", policy(ALL_KBS))];
        let context = BTreeMap::new();
        let decision = evaluate(
            parsed.iter().map(|(name, policy)| (*name, policy)),
            &Request {
                action: "kb:Delete",
                resource: "basalt:acme:kb/x",
                context: &context,
            },
        );
        assert_eq!(
            decision.explain(),
            "denied explicitly by no-delete/NoDelete"
        );
        let decision = evaluate(
            parsed.iter().map(|(name, policy)| (*name, policy)),
            &Request {
                action: "kb:Search",
                resource: "basalt:acme:kb/x",
                context: &context,
            },
        );
        assert_eq!(decision.explain(), "allowed by all/#0");
    }

    #[test]
    fn wildcards() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("kb:*", "kb:Search", true),
            ("kb:*", "admin:x", false),
            ("basalt:*:kb/hand*", "basalt:acme:kb/handbook", true),
            ("basalt:*:kb/hand*", "basalt:acme:kb/payroll", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn bad_policies_are_refused_with_reasons() {
        for (json, expected) in [
            (r#"{"Statement": []}"#, "at least one statement"),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}"#,
                "Action",
            ),
            (
                r#"{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}"#,
                "Maybe",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {}}}]}"#,
                "IpAddress",
            ),
            (r#"{"Statment": []}"#, "Statment"),
        ] {
            let error = PolicyDocument::parse(json).expect_err(json);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const ACTIONS: &[&str] = &[
            "kb:Search",
            "kb:Answer",
            "kb:Ingest",
            "kb:*",
            "*",
            "admin:ManageKeys",
        ];
        const RESOURCES: &[&str] = &[
            "basalt:acme:kb/handbook",
            "basalt:acme:kb/*",
            "basalt:*:kb/payroll",
            "*",
            "basalt:other:kb/handbook",
        ];

        fn statement() -> impl Strategy<Value = Statement> {
            (any::<bool>(), 0..ACTIONS.len(), 0..RESOURCES.len()).prop_map(
                |(allow, action, resource)| Statement {
                    sid: None,
                    effect: if allow { Effect::Allow } else { Effect::Deny },
                    action: vec![ACTIONS[action].to_owned()],
                    resource: vec![RESOURCES[resource].to_owned()],
                    condition: BTreeMap::new(),
                },
            )
        }

        fn decide(policies: &[PolicyDocument], action: &str, resource: &str) -> Decision {
            let context = BTreeMap::new();
            evaluate(
                policies.iter().map(|policy| ("p", policy)),
                &Request {
                    action,
                    resource,
                    context: &context,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Default deny, explicit deny wins, any allow grants, and the order of policies
            /// and statements never matters.
            #[test]
            fn evaluation_follows_the_iam_rules(
                statements in proptest::collection::vec(statement(), 0..8),
                split in 0usize..8,
                action in 0usize..3,
                resource in prop_oneof![Just(0usize), Just(2usize), Just(4usize)],
            ) {
                let (action, resource) = (ACTIONS[action], RESOURCES[resource]);
                let matching: Vec<&Statement> = statements
                    .iter()
                    .filter(|statement| statement_matches(statement, &Request {
                        action, resource, context: &BTreeMap::new(),
                    }))
                    .collect();
                let split = split.min(statements.len());
                let policies = vec![
                    PolicyDocument { version: None, statement: statements[..split].to_vec() },
                    PolicyDocument { version: None, statement: statements[split..].to_vec() },
                ];
                let decision = decide(&policies, action, resource);
                let any_deny = matching.iter().any(|statement| statement.effect == Effect::Deny);
                let any_allow = matching.iter().any(|statement| statement.effect == Effect::Allow);
                prop_assert_eq!(decision.allowed, any_allow && !any_deny);
                let expected_reason = if any_deny { "explicit_deny" } else if any_allow { "allow" } else { "implicit_deny" };
                prop_assert_eq!(decision.reason, expected_reason);

                let mut reversed: Vec<Statement> = statements.clone();
                reversed.reverse();
                let swapped = vec![PolicyDocument { version: None, statement: reversed }];
                prop_assert_eq!(decide(&swapped, action, resource).allowed, decision.allowed);
            }
        }
    }
}
