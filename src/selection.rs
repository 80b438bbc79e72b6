//! Which IntegrityProfile governs an Application. Exactly one may: none means the Application is not
//! protected, more than one is a configuration error, and nothing is vouched for (fail closed).

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use thiserror::Error;

use crate::resources::profile::{ApplicationSelectorTerm, IntegrityProfile, LabelOperator, LabelRequirement};

/// The facts about an Application that selectors look at.
#[derive(Clone, Copy, Debug)]
pub struct AppFacts<'a> {
    pub name: &'a str,
    pub project: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectionError {
    #[error("applicationSelector[{term}].{field}: {pattern:?} is not a valid glob: {reason}")]
    InvalidGlob { term: usize, field: &'static str, pattern: String, reason: String },
}

/// The outcome of selecting a profile for one Application.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection<'p> {
    Unprotected,
    Selected(&'p IntegrityProfile),
    /// More than one profile selects the Application (names sorted).
    Conflict(Vec<&'p IntegrityProfile>),
    /// A profile's selector cannot be evaluated, so whether it selects the Application is unknown.
    Invalid {
        profile: &'p IntegrityProfile,
        error: SelectionError,
    },
}

/// Does this profile select the Application?
pub fn selects(profile: &IntegrityProfile, app: &AppFacts) -> Result<bool, SelectionError> {
    for (i, term) in profile.spec.application_selector.iter().enumerate() {
        if term_matches(i, term, app)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Selects among the profiles of the Application's namespace.
pub fn select<'p>(profiles: impl IntoIterator<Item = &'p IntegrityProfile>, app: &AppFacts) -> Selection<'p> {
    let mut selected = Vec::new();
    for profile in profiles {
        match selects(profile, app) {
            Ok(true) => selected.push(profile),
            Ok(false) => {}
            Err(error) => return Selection::Invalid { profile, error },
        }
    }
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    match selected.len() {
        0 => Selection::Unprotected,
        1 => Selection::Selected(selected[0]),
        _ => Selection::Conflict(selected),
    }
}

fn term_matches(i: usize, term: &ApplicationSelectorTerm, app: &AppFacts) -> Result<bool, SelectionError> {
    if let Some(pattern) = &term.name
        && !glob(i, "name", pattern)?.is_match(app.name)
    {
        return Ok(false);
    }
    if let Some(pattern) = &term.project
        && !glob(i, "project", pattern)?.is_match(app.project)
    {
        return Ok(false);
    }
    if let Some(labels) = &term.match_labels
        && !labels.iter().all(|(k, v)| app.labels.get(k) == Some(v))
    {
        return Ok(false);
    }
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    Ok(expressions.iter().all(|req| requirement_matches(req, app.labels)))
}

fn glob(term: usize, field: &'static str, pattern: &str) -> Result<GlobMatcher, SelectionError> {
    Glob::new(pattern).map(|g| g.compile_matcher()).map_err(|e| SelectionError::InvalidGlob {
        term,
        field,
        pattern: pattern.to_string(),
        reason: e.kind().to_string(),
    })
}

/// Kubernetes label-selector semantics: `NotIn` and `DoesNotExist` match an absent label.
fn requirement_matches(req: &LabelRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator {
        LabelOperator::In => value.is_some_and(|v| values.contains(v)),
        LabelOperator::NotIn => value.is_none_or(|v| !values.contains(v)),
        LabelOperator::Exists => value.is_some(),
        LabelOperator::DoesNotExist => value.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::profile::IntegrityProfileSpec;

    fn profile(name: &str, selector: &str) -> IntegrityProfile {
        let terms: Vec<ApplicationSelectorTerm> = serde_saphyr::from_str(selector).expect("fixture");
        let mut p =
            IntegrityProfile::new(name, IntegrityProfileSpec { application_selector: terms, ..Default::default() });
        p.metadata.namespace = Some("argocd".into());
        p
    }

    fn facts<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> AppFacts<'a> {
        AppFacts { name, project: "shop", labels }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn name_globs_and_labels_must_all_match_within_a_term() {
        let p = profile("prod", "[{name: 'shop-*', matchLabels: {tier: prod}}]");
        let prod = labels(&[("tier", "prod")]);
        let dev = labels(&[("tier", "dev")]);
        assert_eq!(selects(&p, &facts("shop-cart", &prod)), Ok(true));
        assert_eq!(selects(&p, &facts("shop-cart", &dev)), Ok(false));
        assert_eq!(selects(&p, &facts("blog", &prod)), Ok(false));
    }

    #[test]
    fn any_term_selects() {
        let p = profile("p", "[{name: blog}, {project: 'sh*'}]");
        let none = labels(&[]);
        assert_eq!(selects(&p, &facts("blog", &none)), Ok(true));
        assert_eq!(selects(&p, &facts("other", &none)), Ok(true)); // project shop
    }

    #[test]
    fn label_expressions_follow_kubernetes_semantics() {
        let p = profile(
            "p",
            "[{matchExpressions: [{key: tier, operator: In, values: [prod, staging]}, {key: legacy, operator: DoesNotExist}, {key: team, operator: NotIn, values: [ops]}]}]",
        );
        assert_eq!(selects(&p, &facts("a", &labels(&[("tier", "prod")]))), Ok(true));
        assert_eq!(selects(&p, &facts("a", &labels(&[("tier", "prod"), ("team", "ops")]))), Ok(false));
        assert_eq!(selects(&p, &facts("a", &labels(&[("tier", "prod"), ("legacy", "")]))), Ok(false));
        assert_eq!(selects(&p, &facts("a", &labels(&[("tier", "dev")]))), Ok(false));
        let exists = profile("p", "[{matchExpressions: [{key: tier, operator: Exists}]}]");
        assert_eq!(selects(&exists, &facts("a", &labels(&[("tier", "")]))), Ok(true));
        assert_eq!(selects(&exists, &facts("a", &labels(&[]))), Ok(false));
    }

    #[test]
    fn none_one_or_conflict() {
        let a = profile("a", "[{name: 'shop-*'}]");
        let b = profile("b", "[{name: '*-cart'}]");
        let none = labels(&[]);
        assert_eq!(select([&a, &b], &facts("blog", &none)), Selection::Unprotected);
        assert_eq!(select([&a, &b], &facts("shop-api", &none)), Selection::Selected(&a));
        assert_eq!(select([&b, &a], &facts("shop-cart", &none)), Selection::Conflict(vec![&a, &b]));
    }

    #[test]
    fn an_invalid_glob_is_reported_not_ignored() {
        let bad = profile("bad", "[{name: 'shop-[a'}]");
        let ok = profile("ok", "[{name: '*'}]");
        let none = labels(&[]);
        match select([&ok, &bad], &facts("shop-a", &none)) {
            Selection::Invalid { profile, error: SelectionError::InvalidGlob { term: 0, field: "name", .. } } => {
                assert_eq!(profile.metadata.name.as_deref(), Some("bad"))
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
