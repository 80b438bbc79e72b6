//! The README against the code: every reason its troubleshooting table names is one the code reports
//! (outside its tests), so a renamed or removed reason cannot linger in the documentation. No peers.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests sit at the end of a file; what they name is not something Weft reports.
            out.push_str(text.split("#[cfg(test)]").next().unwrap_or_default());
        }
    }
}

#[test]
fn every_reason_in_the_troubleshooting_table_is_reported_by_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = readme.split("### Troubleshooting").nth(1).expect("a troubleshooting section");
    let table = table.split("\n#").next().unwrap_or_default();
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    let mut missing = Vec::new();
    let mut seen = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for reason in first.split('`').skip(1).step_by(2) {
            // `SourceMaterials*`: a family, by prefix.
            let (name, prefix) = match reason.strip_suffix('*') {
                Some(p) => (p, true),
                None => (reason, false),
            };
            if !name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                continue;
            }
            seen += 1;
            let needle = if prefix { format!("\"{name}") } else { format!("\"{name}\"") };
            if !code.contains(&needle) {
                missing.push(reason.to_string());
            }
        }
    }
    assert!(seen > 50, "the table was not found or not read ({seen} reasons)");
    assert!(missing.is_empty(), "the README names reasons the code never reports: {missing:?}");
}
