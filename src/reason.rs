//! Every reason Weft gives — in a condition, a verdict or a command's output — with its category.
//!
//! Behaviour follows the category, never the spelling: whether a step is retried, the exit code of
//! `weft run`, the metric label of a dependency error and whether a record is re-run after the resync
//! period all come from here. Renaming a reason renames it; it changes nothing else.

use std::fmt;
use std::str::FromStr;

/// What a reason says about the revision, or about what stood in the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The check passed (or there was nothing to check).
    Passed,
    /// Not run, not built or not configured: says nothing either way.
    NotRun,
    /// Weft's configuration — a profile, what it names, the Application, the command line — is wrong or
    /// incomplete: a person must fix it. `weft run` exits 2.
    Configuration,
    /// What was checked is not acceptable.
    Verdict,
    /// A dependency could not be reached, or failed: retried with backoff.
    Unavailable(Dependency),
    /// A dependency refused the request (credentials, permissions, its own rules). A person may fix that
    /// where Weft cannot see it, so such a record is run again after the resync period.
    Refused(Dependency),
    /// A dependency answered with something that does not verify: never retried, never evidence.
    Untrusted(Dependency),
}

impl Category {
    /// Whether waiting can change the outcome (the step is then Pending, not Failed).
    pub fn retryable(self) -> bool {
        matches!(self, Category::Unavailable(_))
    }

    /// The dependency that stood in the way, if one did.
    pub fn dependency(self) -> Option<Dependency> {
        match self {
            Category::Unavailable(d) | Category::Refused(d) | Category::Untrusted(d) => Some(d),
            _ => None,
        }
    }
}

/// What Weft depends on, as the metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dependency {
    Git,
    Registry,
    /// Rekor, v1 or v2.
    TransparencyLog,
    TimestampAuthority,
    /// Fulcio.
    CertificateAuthority,
    Kubernetes,
    /// This machine: the work directory, the repository cache, the task itself.
    Local,
}

impl Dependency {
    /// The `dependency` label of `weft_dependency_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Dependency::Git => "git",
            Dependency::Registry => "registry",
            Dependency::TransparencyLog => "rekor",
            Dependency::TimestampAuthority => "timestamp-authority",
            Dependency::CertificateAuthority => "fulcio",
            Dependency::Kubernetes => "kubernetes",
            Dependency::Local => "local",
        }
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident: $category:expr,)*) => {
        /// A reason, CamelCase as Kubernetes conditions spell them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason { $($(#[$doc])* $name,)* }

        impl Reason {
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name),)* }
            }

            pub fn category(self) -> Category {
                use Category::*;
                use Dependency::*;
                match self { $(Reason::$name => $category,)* }
            }
        }
    };
}

reasons! {
    // Passed.
    Verified: Passed,
    Signed: Passed,
    Recorded: Passed,
    NoImages: Passed,
    /// An IntegrityProfile that selects its Applications without conflict.
    Active: Passed,

    // Not run, or not configured.
    Blocked: NotRun,
    NotImplemented: NotRun,
    StepsNotImplemented: NotRun,
    AwaitingRevision: NotRun,
    NoProfile: NotRun,
    NotRecordedYet: NotRun,
    ImageVerificationNotConfigured: NotRun,
    SigningNotConfigured: NotRun,
    ProvenanceNotConfigured: NotRun,

    // The Application, the profile, what it names, the command line.
    UnreadableApplication: Configuration,
    NoSource: Configuration,
    EmptyRepoURL: Configuration,
    EmptyRevision: Configuration,
    RevisionCountMismatch: Configuration,
    ProfileConflict: Configuration,
    InvalidProfileSelector: Configuration,
    InvalidSelector: Configuration,
    InvalidProfile: Configuration,
    InputUnreadable: Configuration,
    InvalidInput: Configuration,
    ProjectNotFound: Configuration,
    AmbiguousSourcePolicy: Configuration,
    InvalidSourcePolicy: Configuration,
    InvalidKeyring: Configuration,
    InvalidAllowedSigners: Configuration,
    AllowedKeysNotInKeyring: Configuration,
    UnsupportedRepositoryURL: Configuration,
    CredentialsOverHttp: Configuration,
    ReferencedObjectMissing: Configuration,
    ReferencedKeyMissing: Configuration,
    ReferencedKeyInvalid: Configuration,
    ResourcesUnreadable: Configuration,
    InvalidRenderOption: Configuration,
    RenderToolMissing: Configuration,
    InvalidMatchRule: Configuration,
    InvalidImagePolicy: Configuration,
    InvalidImageSignerKey: Configuration,
    InvalidTrustedRoot: Configuration,
    InvalidImageOverride: Configuration,
    ImageOverrideLoosens: Configuration,
    SigningKeyMissing: Configuration,
    SigningKeyInvalid: Configuration,
    SigningKeyPasswordMissing: Configuration,
    SigningKeyWrongPassword: Configuration,
    IdentityTokenMissing: Configuration,
    IdentityTokenInvalid: Configuration,
    KeylessIdentityMismatch: Configuration,
    KeylessNeedsTimestamps: Configuration,
    KeylessNeedsLog: Configuration,
    TimestampAuthorityInvalid: Configuration,
    NoDestination: Configuration,
    InvalidImageRepository: Configuration,
    RegistryCredentialsInvalid: Configuration,
    LayoutUnwritable: Configuration,
    RekorKeyInvalid: Configuration,
    RekorDuplicate: Configuration,

    // The source.
    Unsigned: Verdict,
    Unverified: Verdict,
    BadSignature: Verdict,
    MalformedSignature: Verdict,
    KeyNotAllowed: Verdict,
    KeyNotValid: Verdict,
    SignatureExpired: Verdict,
    SignatureNotLogged: Verdict,
    KeylessSignatureNotVerified: Verdict,
    LightweightTag: Verdict,
    TagMismatch: Verdict,
    TagNotFound: Verdict,
    NotATag: Verdict,
    NoTagRequested: Verdict,
    AmbiguousTag: Verdict,
    AmbiguousRevision: Verdict,
    RevisionNotACommit: Verdict,
    RevisionNotFound: Verdict,
    Downgrade: Verdict,
    DowngradeUnverifiable: Verdict,
    RemoteBaseNotPinned: Verdict,
    RemoteResourceNotPinned: Verdict,
    RepositoryNotPermitted: Verdict,
    /// No policy covers the repository: nothing vouches for it (an Application may point anywhere).
    NoSourcePolicy: Verdict,
    ApplicationNamespaceNotPermitted: Verdict,
    ChartSourceNotVerified: Verdict,
    ShallowRepository: Verdict,
    CorruptObject: Verdict,
    UnsupportedObjectFormat: Verdict,
    RepositoryUnreadable: Verdict,
    ObjectTooLarge: Verdict,
    SourceMaterialsMissing: Verdict,
    SourceMaterialsSignatureInvalid: Verdict,
    SourceMaterialsKeyInvalid: Verdict,
    SourceMaterialsMalformed: Verdict,
    SourceMaterialsPathEscapes: Verdict,
    SourceMaterialsMismatch: Verdict,
    SourceMaterialsIncomplete: Verdict,

    // Rendering and the manifests.
    SourceExportFailed: Verdict,
    SourcePathMissing: Verdict,
    RenderFailed: Verdict,
    RenderUnsupported: Verdict,
    ManifestUnparseable: Verdict,
    ManifestNotAnObject: Verdict,
    ManifestTooLarge: Verdict,

    // The images.
    ImageNotSigned: Verdict,
    NoTrustedSignature: Verdict,
    SlsaLevelTooLow: Verdict,
    NoImagePolicy: Verdict,
    ImageNotFound: Verdict,
    InvalidImageReference: Verdict,
    /// An image layout given on the command line that is not one, or whose blobs do not match their digests.
    LayoutUnreadable: Verdict,
    TooManyImages: Verdict,
    UnverifiedImagesPermitted: Verdict,

    // Signing and publishing.
    NothingToSign: Verdict,
    EnvelopeInvalid: Verdict,

    // Dependencies.
    RepositoryUnreachable: Unavailable(Git),
    RepositoryAccessDenied: Refused(Git),
    RepositoryCacheError: Unavailable(Local),
    RegistryUnavailable: Unavailable(Registry),
    RegistryUnauthorized: Refused(Registry),
    RegistryRefused: Refused(Registry),
    RegistryObjectTooLarge: Untrusted(Registry),
    TransparencyLogUnavailable: Unavailable(TransparencyLog),
    RekorUnavailable: Unavailable(TransparencyLog),
    RekorRejected: Refused(TransparencyLog),
    RekorResponseInvalid: Untrusted(TransparencyLog),
    RekorEntryUnverified: Untrusted(TransparencyLog),
    RekorResponseTooLarge: Untrusted(TransparencyLog),
    TimestampAuthorityUnavailable: Unavailable(TimestampAuthority),
    FulcioUnavailable: Unavailable(CertificateAuthority),
    FulcioRefused: Refused(CertificateAuthority),
    FulcioResponseMalformed: Untrusted(CertificateAuthority),
    ReferencedObjectUnavailable: Unavailable(Kubernetes),
    ClusterUnreachable: Unavailable(Kubernetes),
    WorkDirUnavailable: Unavailable(Local),
    Interrupted: Unavailable(Local),
}

impl Reason {
    pub fn retryable(self) -> bool {
        self.category().retryable()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.as_str().to_string()
    }
}

/// A reason Weft does not give (read back from a stored condition, say).
#[derive(Debug, thiserror::Error)]
#[error("unknown reason {0:?}")]
pub struct UnknownReason(String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Reason, UnknownReason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s).ok_or_else(|| UnknownReason(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), *r);
            assert!(r.as_str().chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{r} is not CamelCase");
        }
        assert!("Verified ".parse::<Reason>().is_err());
    }

    #[test]
    fn only_an_unavailable_dependency_is_retried() {
        for r in Reason::ALL {
            assert_eq!(r.retryable(), matches!(r.category(), Category::Unavailable(_)), "{r}");
        }
        assert!(Reason::RekorUnavailable.retryable());
        assert!(!Reason::RekorRejected.retryable());
        assert_eq!(Reason::RekorUnavailable.category().dependency().map(Dependency::label), Some("rekor"));
    }
}
