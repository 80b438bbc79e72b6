//! Which git policy governs a repository. As in Argo CD 3.5's `sourceIntegrity`: URL globs where `*`
//! crosses `/`, a leading `!` excludes, URLs compared after normalization (lower case, no trailing `/`
//! or `.git`), and more than one matching policy is an error, so nothing passes (fail closed).

use globset::Glob;
use thiserror::Error;

use crate::resources::profile::GitPolicy;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policies {} all match {url}; exactly one may, so nothing from it is accepted until the repos globs are narrowed", .indices.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", "))]
    Ambiguous { url: String, indices: Vec<usize> },
    #[error("policy #{index}: repos url {pattern:?} is not a valid glob: {reason}")]
    InvalidGlob { index: usize, pattern: String, reason: String },
}

impl PolicyError {
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Ambiguous { .. } => "AmbiguousSourcePolicy",
            PolicyError::InvalidGlob { .. } => "InvalidSourcePolicy",
        }
    }
}

/// Lower case, without a trailing `/` or `.git`, as Argo CD compares repository URLs.
pub fn normalize_url(url: &str) -> String {
    let mut u = url.trim().to_ascii_lowercase();
    while u.ends_with('/') {
        u.pop();
    }
    if let Some(stripped) = u.strip_suffix(".git") {
        u = stripped.to_string();
    }
    u
}

/// Does the policy's `repos` list match the URL?
pub fn matches(index: usize, policy: &GitPolicy, url: &str) -> Result<bool, PolicyError> {
    let url = normalize_url(url);
    let mut included = false;
    for repo in &policy.repos {
        let (negated, pattern) = match repo.url.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, repo.url.as_str()),
        };
        let glob = Glob::new(&normalize_url(pattern))
            .map_err(|e| PolicyError::InvalidGlob { index, pattern: repo.url.clone(), reason: e.kind().to_string() })?
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

/// The one policy for `url`, `None` when no policy matches.
pub fn select<'p>(policies: &'p [GitPolicy], url: &str) -> Result<Option<(usize, &'p GitPolicy)>, PolicyError> {
    let mut found = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if matches(i, p, url)? {
            found.push(i);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some((*i, &policies[*i]))),
        _ => Err(PolicyError::Ambiguous { url: url.to_string(), indices: found }),
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
            PolicyError::Ambiguous { url: "https://git.example.com/shop/cart".into(), indices: vec![0, 1] }
        );
        assert!(err.to_string().contains("#0, #1"));
    }

    #[test]
    fn an_invalid_glob_is_reported() {
        let p = policies("- repos: [{url: 'https://x/[a'}]");
        assert!(matches!(select(&p, "https://x/a"), Err(PolicyError::InvalidGlob { index: 0, .. })));
    }
}
