//! Every example config under config/ is valid as written (`switchyard
//! validate`), so the examples the README points to stay true.

mod common;

#[test]
fn every_example_config_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = std::process::Command::new(common::BIN).arg("validate").arg("--config").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{} does not validate: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "expected the example configs under {dir}, found {checked}");
}
