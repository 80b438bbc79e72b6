//! Which git policy governs a repository. As in Argo CD 3.5's `sourceIntegrity`: URL globs where `*`
//! crosses `/`, a leading `!` excludes, and more than one matching policy is an error, so nothing passes
//! (fail closed). URLs and patterns are compared in their canonical form (`url`), so every spelling of
//! a repository selects the same policy; a local repository reached through a symbolic link must
//! select the same policy under its real path too.

use globset::Glob;
use thiserror::Error;

use crate::reason::Reason;
use crate::repository::url;
use crate::resources::profile::GitPolicy;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SourcePolicyError {
    #[error("policies {} all match {url}; exactly one may, so nothing from it is accepted until the repos globs are narrowed", .indices.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", "))]
    Ambiguous { url: String, indices: Vec<usize> },
    #[error("policy #{index}: repos url {pattern:?} is not a valid glob: {reason}")]
    InvalidGlob { index: usize, pattern: String, reason: String },
    #[error(
        "{url} is the same repository as {other}, but the two spellings select different policies ({chosen} and {other_chosen}); write the policies so that both select the same one"
    )]
    SpellingsDisagree { url: String, other: String, chosen: String, other_chosen: String },
}

impl SourcePolicyError {
    pub fn reason(&self) -> Reason {
        match self {
            SourcePolicyError::Ambiguous { .. } | SourcePolicyError::SpellingsDisagree { .. } => {
                Reason::AmbiguousSourcePolicy
            }
            SourcePolicyError::InvalidGlob { .. } => Reason::InvalidSourcePolicy,
        }
    }
}

/// Does the policy's `repos` list match the URL?
pub fn matches(index: usize, policy: &GitPolicy, url: &str) -> Result<bool, SourcePolicyError> {
    let url = url::canonical(url);
    let mut included = false;
    for repo in &policy.repos {
        let (negated, pattern) = match repo.url.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, repo.url.as_str()),
        };
        let glob = Glob::new(&url::canonical_pattern(pattern))
            .map_err(|e| SourcePolicyError::InvalidGlob {
                index,
                pattern: repo.url.clone(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        if glob.is_match(&url) {
            if negated {
                return Ok(false);
            }
            included = true;
        }
    }
    Ok(included)
}

/// The one policy for `url`, `None` when no policy matches. A local path (or `file://` URL) that exists
/// is also matched under its real path (symbolic links resolved), and both must agree.
pub fn select<'p>(policies: &'p [GitPolicy], url: &str) -> Result<Option<(usize, &'p GitPolicy)>, SourcePolicyError> {
    let chosen = select_spelling(policies, url)?;
    if let Some(real) = real_path(url) {
        let other = select_spelling(policies, &real)?;
        if other.map(|o| o.0) != chosen.map(|c| c.0) {
            let name =
                |c: Option<(usize, &GitPolicy)>| c.map(|(i, _)| format!("#{i}")).unwrap_or_else(|| "none".into());
            return Err(SourcePolicyError::SpellingsDisagree {
                url: url.to_string(),
                other: real,
                chosen: name(chosen),
                other_chosen: name(other),
            });
        }
    }
    Ok(chosen)
}

/// The real path of a local repository (symbolic links and `..` resolved by the file system).
fn real_path(url: &str) -> Option<String> {
    let u = url.trim();
    let path = match u.strip_prefix("file://") {
        Some(rest) => rest.strip_prefix("localhost").unwrap_or(rest),
        None if !u.contains("://") => u,
        None => return None,
    };
    let real = std::fs::canonicalize(path).ok()?;
    Some(real.display().to_string())
}

fn select_spelling<'p>(
    policies: &'p [GitPolicy],
    url: &str,
) -> Result<Option<(usize, &'p GitPolicy)>, SourcePolicyError> {
    let mut found = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if matches(i, p, url)? {
            found.push(i);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some((*i, &policies[*i]))),
        _ => Err(SourcePolicyError::Ambiguous { url: url.to_string(), indices: found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> Vec<GitPolicy> {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    #[test]
    fn globs_cross_slashes_and_exclusions_win() {
        let p = policies(
            "- repos: [{url: 'https://git.example.com/shop/*'}, {url: '!https://git.example.com/shop/sandbox'}]",
        );
        assert_eq!(select(&p, "https://git.example.com/shop/cart.git").unwrap().map(|x| x.0), Some(0));
        assert_eq!(select(&p, "https://git.example.com/shop/team/deep/repo").unwrap().map(|x| x.0), Some(0));
        assert_eq!(select(&p, "https://Git.Example.com/shop/sandbox.git/").unwrap(), None);
        assert_eq!(select(&p, "https://git.example.com/blog").unwrap(), None);
    }

    #[test]
    fn two_matching_policies_are_an_error() {
        let p = policies("- repos: [{url: 'https://git.example.com/*'}]\n- repos: [{url: '*/shop/*'}]");
        let err = select(&p, "https://git.example.com/shop/cart").unwrap_err();
        assert_eq!(
            err,
            SourcePolicyError::Ambiguous { url: "https://git.example.com/shop/cart".into(), indices: vec![0, 1] }
        );
        assert!(err.to_string().contains("#0, #1"));
    }

    #[test]
    fn an_invalid_glob_is_reported() {
        let p = policies("- repos: [{url: 'https://x/[a'}]");
        assert!(matches!(select(&p, "https://x/a"), Err(SourcePolicyError::InvalidGlob { index: 0, .. })));
    }
}
