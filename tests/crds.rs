//! `crds/` must hold exactly what `weft crds` prints, so what users install matches the code.

#[test]
fn crds_directory_matches_the_generated_crds() {
    let expected = weft::crds::stream().expect("render CRDs");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/weft.crds.yaml");
    let actual = std::fs::read_to_string(path).expect("read crds/weft.crds.yaml");
    assert!(
        actual == expected,
        "crds/weft.crds.yaml is stale: regenerate it with `cargo run -- crds > crds/weft.crds.yaml`"
    );
}

#[test]
fn the_binary_prints_the_same_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft")).arg("crds").output().expect("run weft crds");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), weft::crds::stream().unwrap());
}
