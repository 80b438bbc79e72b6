//! Which repositories an Application may reach, and with which of Argo CD's credentials. Weft fetches with
//! Argo CD's repository Secrets, so it applies the rules Argo CD applies before it uses them:
//! - the Application's AppProject must permit the repository (`spec.sourceRepos`, globs where `*` stays
//!   within one path segment, `!` denies) and, for an Application outside Argo CD's namespace, the
//!   Application's namespace (`spec.sourceNamespaces`, globs or `/regular expressions/`);
//! - a repository Secret with a `project` serves only Applications of that project;
//! - a `repository` Secret serves exactly its URL, a `repo-creds` Secret the URLs under its URL (same
//!   scheme, host and port, whole path segments), the longest first.

use globset::GlobBuilder;
use serde::Deserialize;

use super::url::{self, RepoLocation};

/// What an AppProject says about sources (its name, `spec.sourceRepos`, `spec.sourceNamespaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRules {
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub source_repos: Vec<String>,
    #[serde(default)]
    pub source_namespaces: Vec<String>,
}

impl ProjectRules {
    /// Argo CD's `IsSourcePermitted`: a deny pattern that matches refuses the repository; otherwise any
    /// allow pattern that matches (or any deny pattern that does not) permits it.
    pub fn permits_repo(&self, repo_url: &str) -> bool {
        let repo = url::canonical(repo_url);
        let mut permitted = false;
        for pattern in &self.source_repos {
            match pattern.strip_prefix('!') {
                Some(denied) => {
                    if glob_match(&url::canonical_pattern(denied), &repo) {
                        return false;
                    }
                    permitted = true;
                }
                None if pattern.trim() == "*" || glob_match(&url::canonical_pattern(pattern), &repo) => {
                    permitted = true
                }
                None => {}
            }
        }
        permitted
    }

    /// Argo CD's `IsAppNamespacePermitted`: Applications in Argo CD's own namespace always are; others
    /// when a `sourceNamespaces` entry (glob, or `/regular expression/`) matches their namespace.
    pub fn permits_namespace(&self, app_namespace: &str, argocd_namespace: &str) -> bool {
        if app_namespace.is_empty() || app_namespace == argocd_namespace {
            return true;
        }
        self.source_namespaces.iter().any(|p| {
            if p.len() > 2 && p.starts_with('/') && p.ends_with('/') {
                regex::Regex::new(&p[1..p.len() - 1]).is_ok_and(|r| r.is_match(app_namespace))
            } else {
                GlobBuilder::new(p).build().is_ok_and(|g| g.compile_matcher().is_match(app_namespace))
            }
        })
    }
}

/// A glob where `*` stays within one path segment and `**` crosses them (Argo CD matches `sourceRepos`
/// with `/` as the separator). An invalid glob matches nothing.
fn glob_match(pattern: &str, value: &str) -> bool {
    GlobBuilder::new(pattern).literal_separator(true).build().is_ok_and(|g| g.compile_matcher().is_match(value))
}

/// The repository Secret whose credentials may be used for `repo_url` by an Application of `project`
/// (`None`: no project, as for `weft verify-source` without `--project`; then project-scoped Secrets
/// are never used).
pub fn credentials_for<'a>(repo_url: &str, project: Option<&str>, secrets: &'a [RepoSecret]) -> Option<&'a RepoSecret> {
    let repo = RepoLocation::parse(repo_url)?;
    let usable = |s: &&RepoSecret| s.project.as_deref().is_none_or(|p| Some(p) == project);
    let located: Vec<(&RepoSecret, RepoLocation)> =
        secrets.iter().filter(usable).filter_map(|s| RepoLocation::parse(&s.url).map(|l| (s, l))).collect();
    if let Some((exact, _)) = located.iter().find(|(s, l)| !s.is_template && *l == repo) {
        return Some(exact);
    }
    located
        .into_iter()
        .filter(|(s, l)| s.is_template && repo.is_under(l))
        .max_by_key(|(_, l)| l.segments.len())
        .map(|(s, _)| s)
}

/// Credentials for one repository, as Argo CD keeps them in its repository Secrets.
#[derive(Clone, Default)]
pub struct RepoCredentials {
    /// The repository Secret they come from (for messages).
    pub secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    pub ssh_private_key: Option<String>,
    pub insecure_ignore_host_key: bool,
    /// `known_hosts` lines for ssh (Argo CD's `argocd-ssh-known-hosts-cm`).
    pub known_hosts: Option<String>,
    /// PEM certificates to trust for the repository's host (Argo CD's `argocd-tls-certs-cm`).
    pub tls_certs: Option<String>,
    /// Skip TLS certificate verification (the Secret's `insecure: "true"`).
    pub insecure: bool,
}

impl std::fmt::Debug for RepoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_private_key", &self.ssh_private_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A repository Secret of Argo CD (`argocd.argoproj.io/secret-type: repository | repo-creds`).
#[derive(Clone, Debug)]
pub struct RepoSecret {
    pub name: String,
    /// `repository` (exact URL) or `repo-creds` (URL prefix).
    pub is_template: bool,
    pub url: String,
    /// Argo CD's `project`: only Applications of that AppProject may use the Secret.
    pub project: Option<String>,
    pub credentials: RepoCredentials,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::access::RepoCredentials;

    fn secret(name: &str, template: bool, url: &str, project: Option<&str>) -> RepoSecret {
        RepoSecret {
            name: name.into(),
            is_template: template,
            url: url.into(),
            project: project.map(String::from),
            credentials: RepoCredentials::default(),
        }
    }

    fn chosen(url: &str, project: Option<&str>, secrets: &[RepoSecret]) -> Option<String> {
        credentials_for(url, project, secrets).map(|s| s.name.clone())
    }

    #[test]
    fn an_exact_repository_secret_wins_then_the_longest_template() {
        let secrets = vec![
            secret("org", true, "https://git.example.com/", None),
            secret("shop", true, "https://git.example.com/shop", None),
            secret("cart", false, "https://git.example.com/shop/cart.git", None),
        ];
        assert_eq!(chosen("https://git.example.com/shop/cart", None, &secrets).as_deref(), Some("cart"));
        assert_eq!(chosen("https://git.example.com/shop/ui.git", None, &secrets).as_deref(), Some("shop"));
        assert_eq!(chosen("https://GIT.example.com/blog", None, &secrets).as_deref(), Some("org"));
        assert_eq!(chosen("https://other.example.com/x", None, &secrets), None);
    }

    #[test]
    fn credentials_never_match_another_host_port_scheme_or_path_segment() {
        let secrets = vec![secret("shop", true, "https://git.example.com/shop", None)];
        for url in [
            "https://git.example.com.evil.test/shop/x",
            "https://git.example.com@evil.test/shop/x",
            "https://git.example.com:8443/shop/x",
            "http://git.example.com/shop/x",
            "https://git.example.com/shopping/x",
            "ssh://git@git.example.com/shop/x",
        ] {
            assert_eq!(chosen(url, None, &secrets), None, "{url}");
        }
    }

    #[test]
    fn project_scoped_secrets_serve_only_their_project() {
        let secrets = vec![secret("team-a", false, "https://git.example.com/a", Some("team-a"))];
        assert_eq!(chosen("https://git.example.com/a", Some("team-a"), &secrets).as_deref(), Some("team-a"));
        assert_eq!(chosen("https://git.example.com/a", Some("team-b"), &secrets), None);
        assert_eq!(chosen("https://git.example.com/a", None, &secrets), None);
    }

    #[test]
    fn source_repos_follow_argo_cds_globs_and_denials() {
        let p = |repos: &[&str]| ProjectRules {
            name: "p".into(),
            source_repos: repos.iter().map(|s| s.to_string()).collect(),
            source_namespaces: Vec::new(),
        };
        assert!(p(&["*"]).permits_repo("https://anything.example/x"));
        assert!(!p(&[]).permits_repo("https://git.example.com/shop/cart"));
        let shop = p(&["https://git.example.com/shop/*"]);
        assert!(shop.permits_repo("https://git.example.com/shop/cart.git"));
        assert!(shop.permits_repo("https://deploy@git.example.com:443/shop/cart"));
        assert!(!shop.permits_repo("https://git.example.com/shop/team/cart"), "* stays in one segment");
        assert!(!shop.permits_repo("https://git.example.com/private"));
        assert!(p(&["https://git.example.com/**"]).permits_repo("https://git.example.com/a/b/c"));
        let denied = p(&["https://git.example.com/*", "!https://git.example.com/secret"]);
        assert!(denied.permits_repo("https://git.example.com/open"));
        assert!(!denied.permits_repo("https://git.example.com/secret.git"));
        assert!(p(&["!https://git.example.com/secret"]).permits_repo("https://elsewhere.example/x"));
        assert!(p(&["git@git.example.com:shop/*"]).permits_repo("ssh://git@git.example.com/shop/cart"));
    }

    #[test]
    fn source_namespaces_are_globs_or_regular_expressions() {
        let p = ProjectRules {
            name: "p".into(),
            source_repos: Vec::new(),
            source_namespaces: vec!["team-*".into(), "/^ops-[0-9]+$/".into()],
        };
        assert!(p.permits_namespace("argocd", "argocd"));
        assert!(p.permits_namespace("team-a", "argocd"));
        assert!(p.permits_namespace("ops-12", "argocd"));
        assert!(!p.permits_namespace("ops-x", "argocd"));
        assert!(!p.permits_namespace("shop", "argocd"));
    }
}
