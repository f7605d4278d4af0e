//! The README's list of Tarn's planner settings is generated from `TarnOptions`' doc
//! comments, the one source of truth: this test fails when the two differ, printing the
//! list to paste (or, with `TARN_DOCS_UPDATE=1`, writing it into the README).

use std::path::PathBuf;

use datafusion::config::ExtensionOptions;
use tarn_optimizer::TarnOptions;

const START: &str = "<!-- tarn-settings:start (generated from TarnOptions; see crates/optimizer/tests/optimizer/settings_doc.rs) -->";
const END: &str = "<!-- tarn-settings:end -->";

/// The list as the README shows it: one item per setting, with its default.
fn generated() -> String {
    let mut out = String::new();
    for entry in TarnOptions::default().entries() {
        let value = entry.value.unwrap_or_default();
        out.push_str(&format!(
            "- `tarn.{}` (default `{value}`): {}\n",
            entry.key,
            entry.description.trim()
        ));
    }
    out
}

#[test]
fn the_readme_lists_every_planner_setting_as_documented_in_the_code() {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        panic!("README.md has no block between\n{START}\nand\n{END}");
    };
    let listed = &text[start + START.len()..end];
    let expected = format!("\n{}", generated());
    if listed != expected {
        if std::env::var_os("TARN_DOCS_UPDATE").is_some() {
            let updated = format!("{}{START}{expected}{}", &text[..start], &text[end..]);
            std::fs::write(&readme, updated).expect("write README.md");
            return;
        }
        panic!(
            "README.md's planner settings differ from TarnOptions; run \
             TARN_DOCS_UPDATE=1 cargo test -p tarn-optimizer --test optimizer settings_doc, or paste:\n{expected}"
        );
    }
}
