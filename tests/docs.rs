//! The README against the code: the troubleshooting table names exactly the reasons Weft gives (the
//! catalogue in `weft::reason`), so a renamed, removed or new reason cannot drift from the
//! documentation. No peers.

use std::collections::BTreeSet;
use std::path::Path;

use weft::reason::{Category, Reason};

/// The reasons each row of the troubleshooting table names (`SourceMaterials*` for a family).
fn table_reasons() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = readme.split("### Troubleshooting").nth(1).expect("a troubleshooting section");
    let table = table.split("\n#").next().unwrap_or_default();
    let mut names = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        names.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    names
}

fn covers(name: &str, reason: Reason) -> bool {
    match name.strip_suffix('*') {
        Some(prefix) => reason.as_str().starts_with(prefix),
        None => reason.as_str() == name,
    }
}

#[test]
fn the_troubleshooting_table_names_every_reason_weft_gives_and_no_other() {
    let names = table_reasons();
    assert!(names.len() > 50, "the table was not found or not read ({} reasons)", names.len());
    let unknown: Vec<&String> = names.iter().filter(|n| !Reason::ALL.iter().any(|r| covers(n, *r))).collect();
    assert!(unknown.is_empty(), "the README names reasons Weft never gives: {unknown:?}");
    // What passed needs no troubleshooting; everything else does.
    let undocumented: BTreeSet<&str> = Reason::ALL
        .iter()
        .filter(|r| r.category() != Category::Passed && !names.iter().any(|n| covers(n, **r)))
        .map(|r| r.as_str())
        .collect();
    assert!(undocumented.is_empty(), "the README's troubleshooting table leaves out: {undocumented:?}");
}
