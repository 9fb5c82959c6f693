//! Every plan shipped in examples/ is valid, so the examples stay true.

use loadfleet_controller::plan;

#[test]
fn every_example_plan_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.push(dir.join("moodle/plan.toml"));
    for path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let p = plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(p.users() > 0);
            checked.push(p.name);
        }
    }
    checked.sort();
    assert_eq!(checked, ["journey", "moodle", "ramp-20", "smoke"]);
}
