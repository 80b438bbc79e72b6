//! Strict verification is incremental: what verified once (under the same keys) is not checked again,
//! and a walk that stops at a cached commit reports the same signer and seals as a full walk.

mod common;

use common::git::{Gpg, GpgKey, Repo, Sign};
use weft::source::history::{self, VerifiedCommits};
use weft::source::openpgp::AllowedPgpKeys;
use weft::source::{CommitId, Trust};

fn trust(gpg: &Gpg, key: &GpgKey) -> Trust {
    let armored = gpg.export(key);
    Trust::new(
        Some(AllowedPgpKeys::new(&[armored.as_str()], std::slice::from_ref(&key.fingerprint)).unwrap()),
        None,
        None,
    )
}

#[test]
fn after_one_new_commit_only_that_commit_is_checked() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("legacy", Sign::No);
    let seal = repo.commit("adopt signing\n\nWeft-Seal: reviewed", Sign::Gpg(&alice));
    for i in 0..20 {
        repo.commit(&format!("c{i}"), Sign::Gpg(&alice));
    }
    let trust = trust(&gpg, &alice);
    let cache = VerifiedCommits::default();
    let local = weft::source::repo::Repo::open(repo.path()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    let head = CommitId::parse(&repo.head()).unwrap();
    let cold = history::verify_strict(&local, &head, &trust, &cache, now).unwrap();
    assert!(cold.failure.is_none());
    assert_eq!((cold.checked, cold.cached), (21, 0));
    assert_eq!(cold.seals.iter().map(|c| c.to_string()).collect::<Vec<_>>(), [seal.as_str()]);

    let again = history::verify_strict(&local, &head, &trust, &cache, now).unwrap();
    assert_eq!((again.checked, again.cached), (0, 1));
    assert_eq!(again.seals, cold.seals, "a cached walk reports the same seals");
    assert_eq!(again.head_signer, cold.head_signer, "and the same signer");

    let next = CommitId::parse(&repo.commit("one more", Sign::Gpg(&alice))).unwrap();
    let local = weft::source::repo::Repo::open(repo.path()).unwrap();
    let incremental = history::verify_strict(&local, &next, &trust, &cache, now).unwrap();
    assert_eq!((incremental.checked, incremental.cached), (1, 1));
    assert_eq!(incremental.seals, cold.seals);

    // Other keys, other cache: nothing carries over.
    let bob = gpg.key("Bob");
    let other = history::verify_strict(&local, &next, &self::trust(&gpg, &bob), &cache, now).unwrap();
    assert_eq!(other.cached, 0);
    assert!(other.failure.is_some());

    // A verdict does not outlive the key: past its expiry the history is checked again (and fails).
    let expiry = trust.valid_until().expect("the test key expires");
    let later = history::verify_strict(&local, &next, &trust, &cache, expiry + 1).unwrap();
    assert_eq!(later.cached, 0);
    assert_eq!(later.failure.map(|f| f.reason.as_str()), Some("KeyNotValid"));
}
