//! Git repositories as Argo CD names and reaches them: URL spellings (`url`), and which of Argo CD's
//! repository Secrets an Application may use for which repository (`access`). Shared by source
//! verification and by what a profile refers to.

pub mod access;
pub mod url;
