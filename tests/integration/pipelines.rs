//! Every pipeline shipped in `pipelines/` validates and plans.

use crate::common::BIN;

#[test]
fn shipped_pipelines_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name.ends_with(".config.yaml") {
            continue;
        }
        let o = std::process::Command::new(BIN)
            .arg("validate")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = std::process::Command::new(BIN)
            .args(["graph", "--no-status"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        n += 1;
    }
    assert!(n >= 1, "no pipelines found in {}", dir.display());
}
